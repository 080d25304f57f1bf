"""tau2_bench: τ²-bench's airline and retail tasks on the package's own tools and evaluators. (`server: tau2_bench`)."""
