"""Gymnasium text environments (`gymnasium.Env`, made with `gymnasium.make`) as gym_ray step environments.

Each episode owns one env instance: `reset` makes it and calls `env.reset(seed=task.verifier_metadata.seed)`,
`step` turns the model's text into an action and calls `env.step`; `terminated or truncated` ends the
episode and every step's reward is kept (the env-step agent's `turn_rewards`, the episode reward their sum).

Actions: for a `spaces.Text` action space the model's text as is; for `spaces.Discrete` the last integer in
it. Anything else, or text the space rejects, ends the episode with reward 0 and an `info.reason` (the
model's mistake, not the env's). Observations: a `str` as is, anything else as JSON. Subclass and override
`action` / `observation_text` for other spaces.

Config (`envs.<name>.config`): `env_id` (Gymnasium's id; `module:EnvId` imports the module that registers
it first, as `gymnasium.make` does), `make_kwargs` (passed to `gymnasium.make`).
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from gym_ray.resources.server import ResourceServer
from gym_ray.types import StepResult, Task

_INT = re.compile(r"-?\d+")


# Shared by the step-env adapters (gymnasium, textarena, openenv): one place for how they report.
class BadAction(ValueError):
    """The model's text is not an action of the env's action space."""


def jsonable(value: Any) -> Any:
    """Step info goes into `metrics_json`: keep what JSON can hold (arrays as lists), as text what it cannot."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def malformed_action(error: BadAction) -> StepResult:
    """A model's action the env cannot take ends the episode: reward 0, the model's mistake in `info.reason`."""
    return StepResult(observation=f"Invalid action; episode over. {error}", done=True,
                      info={"reason": f"malformed action: {error}"})


class GymnasiumEnv(ResourceServer):
    """One `gymnasium.make(env_id)` instance per episode."""

    def __init__(self, env_id: str, make_kwargs: dict[str, Any] | None = None) -> None:
        import gymnasium

        self._gym = gymnasium
        self.env_id = env_id
        self.make_kwargs = dict(make_kwargs or {})
        module, _, registered = env_id.rpartition(":")
        try:
            if module:  # what gymnasium.make does with `module:EnvId`: the import registers the id
                importlib.import_module(module)
            self._gym.spec(registered)
        except (self._gym.error.Error, ImportError) as e:
            raise ValueError(f"config.env_id: {env_id!r} is not a registered Gymnasium environment: {e}") from e

    # --- hooks for other spaces ------------------------------------------------------------------
    def action(self, space: Any, text: str) -> Any:
        spaces = self._gym.spaces
        if isinstance(space, spaces.Text):
            action = text.strip()
        elif isinstance(space, spaces.Discrete):
            found = _INT.findall(text)
            if not found:
                raise BadAction(f"no integer action in {text[-80:]!r}")
            action = int(found[-1])
        else:
            raise BadAction(f"action space {space} has no text form (override GymnasiumEnv.action)")
        if not space.contains(action):
            raise BadAction(f"{action!r} is not in the action space {space}")
        return action

    def observation_text(self, observation: Any) -> str:
        return observation if isinstance(observation, str) else json.dumps(jsonable(observation))

    # --- the step protocol ---------------------------------------------------------------------
    def reset(self, task: Task) -> str:
        env = self._gym.make(task.verifier_metadata.get("env_id", self.env_id), **self.make_kwargs)
        seed = task.verifier_metadata.get("seed")
        observation, _ = env.reset(seed=None if seed is None else int(seed))
        self.state = {"env": env}
        return self.observation_text(observation)

    def step(self, action: str) -> StepResult:
        env = self.state["env"]
        try:
            act = self.action(env.action_space, action)
        except BadAction as e:
            self.close()
            return malformed_action(e)
        observation, reward, terminated, truncated, info = env.step(act)
        done = bool(terminated or truncated)
        if done:
            self.close()
        return StepResult(observation=self.observation_text(observation), reward=float(reward), done=done,
                          info={**jsonable(info), "terminated": bool(terminated), "truncated": bool(truncated)})

    def close(self) -> None:
        env = (self.state or {}).get("env")
        if env is not None:
            self.state["env"] = None
            env.close()
