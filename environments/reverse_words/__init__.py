"""reverse_words: A Gymnasium text env (reverse each word) through gym_ray's Gymnasium adapter. (`server: reverse_words`)."""
