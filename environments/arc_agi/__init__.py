"""arc_agi: ARC-AGI-1 and ARC-AGI-2, the output grid of each test input. (`server: arc_agi`)."""
