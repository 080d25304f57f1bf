"""judge: Open-ended answers graded by an LLM judge against a reference answer. (`server: judge`)."""
