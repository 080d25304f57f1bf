"""mmath: the MMATH benchmark (AIME 2024, AIME 2025-I, MATH-500 subset, CNMO; ten languages). (`server: mmath`)."""
