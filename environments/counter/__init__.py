"""counter: Per-episode session state behind two tools (NeMo Gym's example_session_state_mgmt). (`server: counter`)."""
