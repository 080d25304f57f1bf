"""The package's server: gym_ray's Gymnasium adapter over this package's `gymnasium.Env` (env.py)."""

from __future__ import annotations

from typing import Any

from gym_ray.integrations.gymnasium import GymnasiumEnv

MAKE_ID = "gym_ray_env_reverse_words.env:gym_ray/ReverseWords-v0"  # `module:EnvId`: the import registers it


class ReverseWords(GymnasiumEnv):
    """`gym_ray/ReverseWords-v0` made with `gymnasium.make`; `make_kwargs` as the adapter's."""
    verifier = "the `gymnasium.Env`'s per-step rewards"
    origin = "Gymnasium (`gymnasium.make`)"

    def __init__(self, env_id: str = MAKE_ID, make_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(env_id, make_kwargs)
