"""math: Single-turn math, checked with math-verify. (`server: math`)."""
