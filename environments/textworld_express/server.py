"""TextWorldExpress: one simulator (a JVM started by the `textworld-express` package) per episode, with the
row's game, parameters, fold and seed; the action text goes to the game and its own score (0-1) is the
reward, its won/lost flags end the episode."""

from __future__ import annotations

import asyncio
from typing import Any

from gym_ray import ResourceServer, StepResult, compat
from gym_ray.types import Task
from textworld_express import TextWorldExpressEnv

GAMES = ("cookingworld", "coin", "twc")
SYSTEM = ("You are playing a text game. Each turn, reply with exactly one command (e.g. `look around`, "
          "`move north`, `open door to east`, `take coin`, `inventory`), and nothing else.")


def start(step_limit: int) -> TextWorldExpressEnv:
    """A simulator (the caller stops it, see `stop`)."""
    return TextWorldExpressEnv(envStepLimit=step_limit)


def new_game(sim: TextWorldExpressEnv, meta: dict[str, Any], gold: bool = False) -> tuple[str, dict]:
    """Load the row's game and generate its seeded instance: (first observation, infos)."""
    sim.load(meta["game"], meta.get("params", ""))
    return sim.reset(seed=int(meta["seed"]), gameFold=meta["fold"], generateGoldPath=gold)


def stop(sim: TextWorldExpressEnv) -> None:
    """Shut the simulator down and wait for its JVM to exit."""
    compat.stop_java_simulator(sim)


class TextWorldExpress(ResourceServer):
    verifier = "the game's own score (0-1, as step rewards); won/lost flags end the episode"
    origin = "textworld-express==1.1.0 (Apache-2.0)"
    metric = "mean_reward"

    def __init__(self, step_limit: int = 100) -> None:
        if step_limit < 1:
            raise ValueError(f"step_limit {step_limit}: must be at least 1")
        self.step_limit = step_limit

    def _reset(self, task: Task) -> str:
        meta = task.verifier_metadata
        missing = [k for k in ("game", "fold", "seed") if k not in meta]
        if missing:
            raise ValueError(f"task {task.task_id}: verifier_metadata needs {', '.join(missing)}")
        sim = start(self.step_limit)
        self.state = {"sim": sim, "score": 0.0}
        observation, infos = new_game(sim, meta)
        return f"{infos['taskDescription']}\n\n{observation}"

    def _step(self, action: str) -> StepResult:
        sim: TextWorldExpressEnv = self.state["sim"]
        observation, _, done, infos = sim.step(action)
        score, before = float(infos["score"]), self.state["score"]
        self.state["score"] = score
        return StepResult(observation=observation, reward=max(score, 0.0) - max(before, 0.0), done=bool(done),
                          info={"score": score, "moves": int(infos["numMoves"]),
                                "won": bool(infos["tasksuccess"]), "lost": bool(infos["taskfailure"])})

    # The simulator answers over a socket and starts in seconds: off the event loop, with the episode bound.
    async def reset(self, task: Task) -> str:
        return await asyncio.to_thread(self._reset, task)

    async def step(self, action: str) -> StepResult:
        return await asyncio.to_thread(self._step, action)

    def close(self) -> None:
        state: dict[str, Any] = self.state or {}
        if state.get("sim") is not None:
            stop(state.pop("sim"))
