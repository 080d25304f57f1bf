"""The package's server: gym_ray's TextArena adapter, with this folder's default game."""

from __future__ import annotations

from typing import Any

from gym_ray.integrations.textarena import TextArenaEnv


class TextArena(TextArenaEnv):
    """TextArena single-player games; tasks name their game (`verifier_metadata.env_id`), else `env_id`."""
    verifier = "TextArena's own game reward (per step, at game end)"
    origin = "TextArena (`GuessTheNumber-v0`, `TowerOfHanoi-v0`)"

    def __init__(self, env_id: str = "GuessTheNumber-v0", make_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(env_id, make_kwargs)
