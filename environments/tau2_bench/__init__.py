"""tau2_bench: τ²-bench airline, retail and telecom on the package's own tools and evaluators. (`server: tau2_bench`)."""
