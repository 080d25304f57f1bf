"""one_word: Name something of a category in one word. (`server: one_word`)."""
