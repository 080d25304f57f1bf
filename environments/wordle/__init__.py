"""wordle: Wordle with the official answer and guess lists, played guess by guess. (`server: wordle`)."""
