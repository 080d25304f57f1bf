"""Agent for step-driven environments (Gymnasium style, e.g. blackjack): observation -> model -> action.

The observation goes to the model as a user message, the assistant's text (stripped) is the action, and
`env.step` answers with the next observation, a reward and `done`. Rewards per step are kept in
`turn_rewards`; the episode reward is their sum. Running out of turns before `done` marks it truncated.
With `kwargs.verify: true` the environment's `verify` scores the episode instead (reward, components);
its options are `EnvStepAgent.Options`.
"""

from __future__ import annotations

from gym_ray.agents.base import AgentOptions, EpisodeContext, agent_options
from gym_ray.agents.episode import Episode, failed
from gym_ray.config import AgentConfig
from gym_ray.errors import FailureStage, Status
from gym_ray.types import Message, Rollout, Task


class EnvStepOptions(AgentOptions):
    # score the episode with the environment's `verify` instead of the sum of the step rewards
    verify: bool = False


class EnvStepAgent:
    Options = EnvStepOptions

    def __init__(self, config: AgentConfig):
        self.config = config
        self.verify = agent_options(EnvStepAgent, config.kwargs).verify

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]:
        ep = Episode(task, ctx)
        obs = await ep.env_call("reset", ctx.env.reset(ctx.session_id, task), FailureStage.SEED)
        if failed(obs):
            ep.start([])
        else:
            if obs:
                ep.messages.append(Message(role="user", content=ep.capped(obs)))
            ep.admit(ep.messages)
            await self._loop(ep)
        ep.reward = sum(ep.turn_rewards)
        if self.verify and ep.status == Status.OK:
            await ep.verify()
        await ep.close()
        return ep.rows()

    async def _loop(self, ep: Episode) -> None:
        ctx = ep.ctx
        for _ in range(self.config.max_turns):
            if ep.stopped:
                return
            gen = await ep.generate()
            if gen is None:
                return
            action = ep.chat.decode(gen.token_ids).strip()
            ep.messages.append(Message(role="assistant", content=action))
            if ep.stopped:
                return
            result = await ep.env_call("step", ctx.env.step(ctx.session_id, action), FailureStage.TOOL)
            if failed(result):
                return
            ep.turn_rewards.append(float(result.reward))
            if result.info:
                ep.info.setdefault("step_info", []).append(result.info)
            if result.done:
                ep.stop("done")
                return
            if not await ep.append([Message(role="user", content=ep.capped(result.observation))]):
                return
        ep.stop("max_turns", truncated=True)
