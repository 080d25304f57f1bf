"""A verifiers taskset whose multi-turn env breaks mid-episode (tests/integrations/test_verifiers_envs.py)."""

from collections.abc import Iterator

import verifiers.v1 as vf


class BrokenTask(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
    pass


class BrokenTaskset(vf.Taskset[BrokenTask, vf.TasksetConfig]):
    def load(self) -> Iterator[BrokenTask]:
        yield BrokenTask(vf.TaskData(id="broken-0", prompt="Say something."), self.config.task)


class BrokenEnvConfig(vf.EnvConfig):
    player: vf.AgentConfig = vf.AgentConfig()


class BrokenEnv(vf.Env[BrokenEnvConfig]):
    async def run(self, task, agents) -> None:
        async with agents.player.interaction(task) as interaction:
            await interaction.turn()
            raise RuntimeError("the game engine crashed")


__all__ = ["BrokenTaskset", "BrokenTask", "BrokenEnv"]
