"""humaneval: OpenAI's HumanEval, run by its own tests in the bubblewrap sandbox. (`server: humaneval`)."""
