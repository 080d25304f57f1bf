"""A multi-turn verifiers (0.4) environment package in verifiers' own API: the env plays the user.

`GuessEnv.run` is the episode (verifiers' `Env.run(task, agents)`): the player guesses the task's secret
number, and the env answers each guess with "Higher." or "Lower." through `interaction.turn(...)`, as
verifiers' TextArena env steps its game. It records the reward `solved` (1.0 when the player names the
number within `max_guesses`) and the metric `guesses`; the task's `@vf.reward` `efficiency` (weight 0)
is reported beside it. gym_ray drives it with its env-step agent (`server: verifiers:gym-ray-vf-guess`).
"""

import random
import re
from collections.abc import Iterator

import verifiers.v1 as vf

_INT = re.compile(r"-?\d+")
SYSTEM_PROMPT = "Guess the secret number. Reply with one whole number; you will be told higher or lower."


class GuessData(vf.TaskData):
    secret: int
    high: int


class GuessTask(vf.Task[GuessData, vf.State, vf.TaskConfig]):
    @vf.reward(weight=0.0)
    async def efficiency(self, trace: vf.Trace) -> float:
        return 1.0 / max(1, len(trace.assistant_messages))


class GuessConfig(vf.TasksetConfig):
    num_tasks: int = 16
    high: int = 32


class GuessTaskset(vf.Taskset[GuessTask, GuessConfig]):
    def load(self) -> Iterator[GuessTask]:
        rng = random.Random(0)
        for i in range(self.config.num_tasks):
            high = self.config.high
            yield GuessTask(GuessData(id=f"guess-{i}", secret=rng.randint(1, high), high=high,
                                      system_prompt=SYSTEM_PROMPT,
                                      prompt=f"I am thinking of a whole number from 1 to {high}. Your guess?"),
                            self.config.task)


class GuessEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig()
    max_guesses: int = 8


class GuessEnv(vf.Env[GuessEnvConfig]):
    async def run(self, task: GuessTask, agents: vf.Agents) -> None:
        solved, guesses = False, 0
        async with agents.player.interaction(task) as interaction:
            segment = await interaction.turn()
            while not segment.terminated:
                guesses += 1
                found = _INT.findall(segment.last_reply)
                if found and int(found[-1]) == task.data.secret:
                    solved = True
                    break
                if guesses >= self.config.max_guesses:
                    break
                if not found:
                    feedback = "Reply with one whole number."
                else:
                    feedback = "Higher." if int(found[-1]) < task.data.secret else "Lower."
                segment = await interaction.turn(feedback)
        interaction.trace.record_reward("solved", float(solved), 1.0)
        interaction.trace.record_metric("guesses", guesses)


__all__ = ["GuessTaskset", "GuessTask", "GuessEnv"]
