"""blackjack: Blackjack played step by step (reset/step), scored win 1, push 0.5, loss 0. (`server: blackjack`)."""
