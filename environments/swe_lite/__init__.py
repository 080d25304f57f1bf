"""swe_lite: Multi-step bug fixing in a small repository, tests run in the sandbox. (`server: swe_lite`)."""
