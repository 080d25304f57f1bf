"""The τ² conversation loop: the tool-calling agent whose plain messages go to the customer.

`reset` gives the simulated customer's opening; each model turn is either tool calls (run by the
environment, results back as tool messages) or a message to the customer (`step`: the customer's reply
comes back as the next user message) until the conversation ends or `max_turns` runs out. Then `verify`.
"""

from __future__ import annotations

from gym_ray.agents.base import EpisodeContext
from gym_ray.agents.episode import Episode, failed
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.errors import FailureStage, Status
from gym_ray.types import Message, Rollout, Task


class Tau2Agent(ToolCallingAgent):
    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]:
        ep = Episode(task, ctx)
        opening = await ep.env_call("reset", ctx.env.reset(ctx.session_id, task), FailureStage.SEED)
        tools = [] if failed(opening) else await self._tools(ep)
        if not failed(opening) and not failed(tools):
            ep.messages.append(Message(role="user", content=ep.capped(opening)))
            await self._converse(ep, tools)
        if ep.transcript is None:
            ep.start([])
        if ep.status == Status.OK:
            await ep.verify()
        await ep.close()
        return ep.rows()

    async def _converse(self, ep: Episode, tools) -> None:
        ctx = ep.ctx
        offered = {t.name for t in tools}
        ep.at(FailureStage.ADMISSION)
        ep.admit(ep.messages, self._schemas(tools))
        for turn in range(self.config.max_turns):
            if ep.stopped:
                return
            gen = await ep.generate()
            if gen is None:
                return
            parsed = self.parser(ep.chat.decode(gen.token_ids), turn)
            ep.messages.append(Message(role="assistant", content=parsed.content, tool_calls=parsed.calls or None))
            if ep.stopped:  # cut by length or aborted: do not act on an incomplete turn
                return
            if parsed.calls or parsed.errors:
                replies = await self.call_tools(ep, parsed.calls, offered, parsed.errors)
                if replies is None:
                    return
            else:
                result = await ep.env_call("step", ctx.env.step(ctx.session_id, parsed.content), FailureStage.TOOL)
                if failed(result):
                    return
                if result.done:
                    ep.stop("done")
                    return
                replies = [Message(role="user", content=ep.capped(result.observation))]
            if not await ep.append(replies):
                return
        ep.stop("max_turns", truncated=True)
