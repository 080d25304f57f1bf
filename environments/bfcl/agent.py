"""The multi-turn BFCL agent: the tool-calling loop, with the user's next turn from the environment.

BFCL's multi-turn test is a scripted conversation: the model calls functions until it answers without a
call, then the next user message comes, and so on for every turn. Here the environment holds the script:
a reply without a call goes to its `step`, which answers with the next user message (and the functions
added at that turn, in miss_func) or `done`. A reply whose calls cannot be parsed also ends the turn, as in
BFCL. Added functions re-render the prompt with the new tool list (a new segment when it no longer extends
the sequence).
"""

from __future__ import annotations

from gym_ray.agents.episode import Episode, failed
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.errors import FailureStage
from gym_ray.types import Message, ToolSpec


class MultiTurnAgent(ToolCallingAgent):
    async def _loop(self, ep: Episode, tools: list[ToolSpec]) -> None:
        ctx, chat = ep.ctx, ep.chat
        tools = list(tools)
        schemas = self._schemas(tools)
        ep.at(FailureStage.ADMISSION)
        ep.admit(ep.task.prompt, schemas)
        for turn in range(self.config.max_turns):
            if ep.stopped:
                return
            gen = await ep.generate()
            if gen is None:
                return
            parsed = self.parser(chat.decode(gen.token_ids), turn)
            ep.messages.append(Message(role="assistant", content=parsed.content, tool_calls=parsed.calls or None))
            if ep.stopped:
                return
            if parsed.calls:
                new = await self.call_tools(ep, parsed.calls, {t.name for t in tools})
                if new is None:
                    return
            else:
                result = await ep.env_call("step", ctx.env.step(ctx.session_id, parsed.content), FailureStage.TOOL)
                if failed(result):
                    return
                if result.done:
                    ep.stop("final_answer")
                    return
                new = [Message(role="user", content=ep.capped(result.observation))]
                added = [ToolSpec.model_validate(t) for t in result.info.get("added_tools", [])]
                if added:
                    tools += added
                    schemas = [t.to_openai() for t in tools]
                    ep.messages.extend(new)
                    ep.transcript.set_prompt(chat.prompt_ids(ep.messages, schemas, cache=False))
                    continue
            if turn == self.config.max_turns - 1:
                ep.messages.extend(new)
                ep.stop("max_turns", truncated=True)
                return
            if not await ep.append(new):
                return
        ep.stop("max_turns", truncated=True)  # out of model calls right after re-rendering for added tools
