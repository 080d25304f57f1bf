"""Agent for step-driven environments (Gymnasium style, e.g. blackjack): observation -> model -> action.

The observation goes to the model as a user message, the assistant's text (stripped) is the action, and
`env.step` answers with the next observation, a reward and `done`. Rewards per step are kept in
`turn_rewards`; the episode reward is their sum. Running out of turns before `done` marks it truncated.
With `kwargs.verify: true` the environment's `verify` scores the episode instead (reward, components);
its options are `EnvStepAgent.Options`. Its turn loop has the tool-calling agent's surface (`start`,
`admit`, `play` with branch points, `replay`, `finish`), so tree rollouts branch it the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from gym_ray.agents.base import AgentOptions, EpisodeContext, agent_options
from gym_ray.agents.episode import Episode, failed
from gym_ray.config import AgentConfig
from gym_ray.errors import FailureStage, Status
from gym_ray.resources.runtime import cap_output
from gym_ray.types import Message, Rollout, Task, ToolSpec


class EnvStepOptions(AgentOptions):
    # score the episode with the environment's `verify` instead of the sum of the step rewards
    verify: bool = False


class EnvStepAgent:
    Options = EnvStepOptions

    def __init__(self, config: AgentConfig):
        self.config = config
        self.verify = agent_options(EnvStepAgent, config.kwargs).verify

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]:
        ep, tools = await self.start(task, ctx)
        if tools is not None:
            await self._loop(ep, tools)
        return await self.finish(ep)

    async def start(self, task: Task, ctx: EpisodeContext) -> tuple[Episode, list[ToolSpec] | None]:
        """Reset the session; its first observation becomes a user message. No tools (the action is the
        reply's text), None when the reset failed."""
        ep = Episode(task, ctx)
        obs = await ep.env_call("reset", ctx.env.reset(ctx.session_id, task), FailureStage.SEED)
        if failed(obs):
            return ep, None
        if obs:
            ep.messages.append(Message(role="user", content=ep.capped(obs)))
        return ep, []

    def admit(self, ep: Episode, tools: list[ToolSpec]) -> None:
        ep.admit(ep.messages)

    async def finish(self, ep: Episode) -> list[Rollout]:
        """Score the episode (its step rewards, or the environment's verify), free its session, return its rows."""
        if ep.transcript is None:  # the reset failed: keep the row's tokens empty but say why
            ep.start([])
        ep.reward = sum(ep.turn_rewards)
        if self.verify and ep.status == Status.OK:
            await ep.verify()
        await ep.close()
        return ep.rows()

    async def _loop(self, ep: Episode, tools: list[ToolSpec]) -> None:
        """The whole episode (subclasses with a loop of their own override this)."""
        self.admit(ep, tools)
        await self.play(ep, tools)

    async def play(self, ep: Episode, tools: list[ToolSpec], first_turn: int = 0,
                   branch_at: Callable[[Episode, int], bool] | None = None) -> int | None:
        """Play turns from `first_turn` until the episode stops (None), or until a later turn is a branch point
        (`branch_at(ep, turn)`): that turn, not played yet, from which a tree's branches go on."""
        ctx = ep.ctx
        for turn in range(first_turn, self.config.max_turns):
            if ep.stopped:
                return None
            if branch_at is not None and turn > first_turn and branch_at(ep, turn):
                return turn
            gen = await ep.generate()
            if gen is None:
                return None
            action = ep.chat.decode(gen.token_ids).strip()
            ep.messages.append(Message(role="assistant", content=action))
            if ep.stopped:
                return None
            result = await ep.env_call("step", ctx.env.step(ctx.session_id, action), FailureStage.TOOL)
            if failed(result):
                return None
            ep.turn_rewards.append(float(result.reward))
            if result.info:
                ep.info.setdefault("step_info", []).append(result.info)
            if result.done:
                ep.stop("done")
                return None
            if not await ep.append([Message(role="user", content=ep.capped(result.observation))]):
                return None
        ep.stop("max_turns", truncated=True)
        return None

    async def replay(self, start: Episode, ctx: EpisodeContext) -> None:
        """Bring the fresh session `ctx.session_id` to where `start` stands: reset it and step its actions
        again; raises when an observation differs from the one recorded (the environment is not
        deterministic from its task)."""
        cap = ctx.config.max_tool_output_chars
        later = start.messages[len(start.task.prompt):]
        recorded = [m.content for m in later if m.role == "user"]
        obs = await ctx.env.reset(ctx.session_id, start.task)
        seen = [cap_output(obs, cap)[0]] if obs else []
        for m in later:
            if m.role == "assistant":
                seen.append(cap_output((await ctx.env.step(ctx.session_id, m.content)).observation, cap)[0])
        if seen != recorded:
            raise ValueError("the environment answered otherwise than before the branch point")
