"""search: Question answering by BM25 search over a shipped corpus. (`server: search`)."""
