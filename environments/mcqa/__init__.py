"""mcqa: Single-turn multiple choice, scored on the option letter. (`server: mcqa`)."""
