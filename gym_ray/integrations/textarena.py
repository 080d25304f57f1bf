"""TextArena games as gym_ray step environments, driven by the env-step agent.

TextArena's API is `ta.make(env_id)`, `reset(num_players, seed)`, `get_observation() -> (player, text)`,
`step(action) -> (done, info)` and, once done, `close() -> (rewards, game_info)`. Each episode owns one game
(made in `reset`, seeded by the task's `verifier_metadata.seed`). Its default wrappers keep the whole game log
in the observation, while the agent keeps the conversation itself, so each step sends the model only the new
part of the log. TextArena scores a game only at its end: every step's reward is 0 and the last step's is
the player's reward from `close()`, with the game's `reason` in the step info.

Config (`envs.<name>.config`): `env_id` (a registered TextArena id, e.g. `GuessTheNumber-v0`),
`make_kwargs` (passed to `ta.make`). Single-player games only: a multi-player game needs the other
players' policies, which this adapter does not schedule.
"""

from __future__ import annotations

from typing import Any

from gym_ray.integrations.gymnasium import jsonable
from gym_ray.resources.server import ResourceServer
from gym_ray.types import StepResult, Task


class TextArenaEnv(ResourceServer):
    """One TextArena single-player game per episode."""

    def __init__(self, env_id: str, make_kwargs: dict[str, Any] | None = None) -> None:
        import textarena as ta
        from textarena.envs.registration import ENV_REGISTRY

        if env_id not in ENV_REGISTRY:
            near = sorted(k for k in ENV_REGISTRY if k.split("-")[0].lower() == env_id.split("-")[0].lower())
            raise ValueError(f"config.env_id: {env_id!r} is not a registered TextArena environment"
                             f"{' (did you mean ' + ', '.join(near) + '?)' if near else ''}")
        self._ta = ta
        self.env_id = env_id
        self.make_kwargs = dict(make_kwargs or {})

    def reset(self, task: Task) -> str:
        game = self._ta.make(env_id=task.verifier_metadata.get("env_id", self.env_id), **self.make_kwargs)
        seed = task.verifier_metadata.get("seed")
        game.reset(num_players=1, seed=None if seed is None else int(seed))
        _, observation = game.get_observation()
        self.state = {"game": game, "log": observation}
        return observation.strip()

    def step(self, action: str) -> StepResult:
        game = self.state["game"]
        done, step_info = game.step(action)
        _, log = game.get_observation()
        seen = self.state["log"]
        new = log[len(seen):] if log.startswith(seen) else log  # the log grew: only its new part
        self.state["log"] = log
        if not done:
            return StepResult(observation=new.strip(), info=jsonable(step_info or {}))
        rewards, game_info = game.close()
        self.state["game"] = None
        mine = jsonable((game_info or {}).get(0, {}))
        reason = mine.get("reason", "")
        text = "\n".join(part for part in (new.strip(), f"[GAME OVER] {reason}".strip()) if part)
        return StepResult(observation=text, reward=float(rewards[0]), done=True, info=mine)

    def close(self) -> None:
        game = (self.state or {}).get("game")
        if game is not None:  # the episode ended before the game did
            self.state["game"] = None
