"""ScienceWorld: one simulator (a JVM started by the `scienceworld` package) per episode, loaded with the
task's variation; the action text goes to the simulator and its own score (0-100) is the reward, as 0-1."""

from __future__ import annotations

import asyncio
from typing import Any

from gym_ray import ResourceServer, StepResult, compat
from gym_ray.types import Task
from scienceworld import ScienceWorldEnv

SYSTEM = ("You are an agent in ScienceWorld, a text simulation of a house and its surroundings. Each turn, "
          "reply with exactly one action (e.g. `look around`, `open door to kitchen`, `go to kitchen`, "
          "`pick up thermometer`, `focus on water`, `inventory`, `task`), and nothing else.")


def start(task_name: str, variation: int, simplifications: str, step_limit: int,
          gold: bool = False) -> ScienceWorldEnv:
    """A simulator with the variation loaded (the caller closes it, see `stop`)."""
    sim = ScienceWorldEnv("", envStepLimit=step_limit)
    try:
        sim.load(task_name, variation, simplifications, generateGoldPath=gold)
    except BaseException:
        stop(sim)
        raise
    return sim


def stop(sim: ScienceWorldEnv) -> None:
    """Shut the simulator down and wait for its JVM to exit."""
    compat.stop_java_simulator(sim)


class ScienceWorld(ResourceServer):
    verifier = "the simulator's own score (0-100, as 0-1 step rewards); success at 100"
    origin = "scienceworld==1.2.3 (Apache-2.0)"
    metric = "mean_reward"

    def __init__(self, step_limit: int = 100, simplifications: str = "") -> None:
        if step_limit < 1:
            raise ValueError(f"step_limit {step_limit}: must be at least 1")
        self.step_limit = step_limit
        self.simplifications = simplifications

    def _reset(self, task: Task) -> str:
        meta = task.verifier_metadata
        if "task_name" not in meta or "variation" not in meta:
            raise ValueError(f"task {task.task_id}: verifier_metadata needs task_name and variation")
        sim = start(meta["task_name"], int(meta["variation"]),
                    meta.get("simplifications", self.simplifications), self.step_limit)
        self.state = {"sim": sim, "score": 0}
        observation, _ = sim.reset()
        return f"{sim.taskdescription()}\n\n{observation}"

    def _step(self, action: str) -> StepResult:
        sim: ScienceWorldEnv = self.state["sim"]
        observation, _, done, info = sim.step(action)
        score, before = int(info["score"]), self.state["score"]
        self.state["score"] = score
        # A failed task scores -100 in the simulator; its headline average counts it as 0.
        reward = (max(score, 0) - max(before, 0)) / 100
        return StepResult(observation=observation, reward=reward, done=bool(done),
                          info={"score": score, "moves": int(info["moves"]), "success": score >= 100})

    # The simulator answers over a socket and starts in seconds: off the event loop, with the episode bound.
    async def reset(self, task: Task) -> str:
        return await asyncio.to_thread(self._reset, task)

    async def step(self, action: str) -> StepResult:
        return await asyncio.to_thread(self._step, action)

    def close(self) -> None:
        state: dict[str, Any] = self.state or {}
        if state.get("sim") is not None:
            stop(state.pop("sim"))
