"""The default agent: offer the environment's tools, loop model -> tool calls -> tool results, then verify.

Its options (`agent.kwargs`) are `ToolCallingAgent.Options`.
"""

from __future__ import annotations

from collections.abc import Callable

from gym_ray.agents.base import AgentOptions, EpisodeContext, agent_options
from gym_ray.agents.episode import Episode, failed
from gym_ray.agents.parsers import HERMES_FORMAT_HINT, get_parser
from gym_ray.config import AgentConfig
from gym_ray.errors import FailureStage, Status
from gym_ray.resources.records import NOT_OFFERED, digest, result_status, tool_record
from gym_ray.resources.runtime import cap_output
from gym_ray.types import Message, Rollout, Task, ToolSpec


class ToolCallingOptions(AgentOptions):
    # Re-render the whole conversation with the chat template before each model call instead of appending
    # token deltas (for templates that rewrite history, e.g. drop earlier reasoning). A prompt that no
    # longer extends the previous sequence starts a new segment.
    rerender: bool = False
    # Ask the environment for its tools once per env client, not per episode.
    cache_tools: bool = True


class ToolCallingAgent:
    Options = ToolCallingOptions

    def __init__(self, config: AgentConfig):
        self.config = config
        self.parser = get_parser(config.tool_parser)
        options = agent_options(ToolCallingAgent, config.kwargs)
        self.rerender = options.rerender
        self.cache_tools = options.cache_tools
        self._env_tools: dict[int, tuple[object, list[ToolSpec]]] = {}
        self._schema_cache: dict[int, tuple[list[ToolSpec], list[dict] | None]] = {}

    async def run(self, task: Task, ctx: EpisodeContext) -> list[Rollout]:
        ep, tools = await self.start(task, ctx)
        if tools is not None:
            await self._loop(ep, tools)
        return await self.finish(ep)

    async def start(self, task: Task, ctx: EpisodeContext) -> tuple[Episode, list[ToolSpec] | None]:
        """Seed the session and get the tools; no tools when the episode failed already."""
        ep = Episode(task, ctx)
        seeded = await ep.env_call("seed_session", ctx.env.seed_session(ctx.session_id, task), FailureStage.SEED)
        if failed(seeded):
            return ep, None
        tools = await self._tools(ep)
        if failed(tools):
            return ep, None
        return ep, tools

    async def finish(self, ep: Episode) -> list[Rollout]:
        """Verify an episode that ended well, free its session, and return its rows."""
        if ep.transcript is None:  # no prompt was rendered: keep the row's tokens empty but say why
            ep.start([])
        if ep.status == Status.OK:
            await ep.verify()
        await ep.close()
        return ep.rows()

    async def _tools(self, ep: Episode) -> list[ToolSpec] | object:
        """The task's tools, else the environment's, fetched once per env client (`cache_tools: false` to
        ask every episode)."""
        if ep.task.tools is not None:
            return ep.task.tools
        env = ep.ctx.env
        hit = self._env_tools.get(id(env))
        if hit is not None and hit[0] is env:
            return hit[1]
        tools = await ep.env_call("tools", env.tools(), FailureStage.SEED)
        if self.cache_tools and not failed(tools):
            self._env_tools[id(env)] = (env, tools)
        return tools

    def _schemas(self, tools: list[ToolSpec]) -> list[dict] | None:
        """OpenAI schemas, the same list object for the same tools (the tokenizer caches on it)."""
        hit = self._schema_cache.get(id(tools))
        if hit is None or hit[0] is not tools:
            hit = (tools, [t.to_openai() for t in tools] or None)
            if len(self._schema_cache) > 256:
                self._schema_cache.clear()
            self._schema_cache[id(tools)] = hit
        return hit[1]

    async def _loop(self, ep: Episode, tools: list[ToolSpec]) -> None:
        """The whole conversation (subclasses with a loop of their own override this)."""
        self.admit(ep, tools)
        await self.play(ep, tools)

    def admit(self, ep: Episode, tools: list[ToolSpec]) -> None:
        ep.at(FailureStage.ADMISSION)
        ep.admit(ep.task.prompt, self._schemas(tools))

    async def call_tools(self, ep: Episode, calls: list, offered: set[str],
                         errors: list | None = None) -> list[Message] | None:
        """The messages answering one turn's tool calls (an unknown tool is told so; unparsable calls get one
        user message naming what went wrong); None when the environment failed and the episode stopped."""
        ctx = ep.ctx
        results = []
        for call in calls:
            if call.name not in offered:
                out = f"Error: unknown tool {call.name!r}; available tools: {sorted(offered)}"
                ep.tool_records.append(tool_record(call.id, call.name, call.arguments, None, NOT_OFFERED))
                content = out
            else:
                out = await ep.env_call(f"tool {call.name}", ctx.env.call_tool(ctx.session_id, call),
                                        FailureStage.TOOL, "tool_s")
                if failed(out):
                    return None
                ep.num_tool_calls += 1
                content = ep.capped(str(out))
                cached = getattr(out, "cached", False)
                if cached:
                    ep.info["tool_cache_hits"] = ep.info.get("tool_cache_hits", 0) + 1
                ep.tool_records.append(tool_record(call.id, call.name, call.arguments, content,
                                                   result_status(content), cached))
            results.append(Message(role="tool", content=content, tool_call_id=call.id, name=call.name))
        if errors:
            results.append(Message(role="user", content=_parse_error_message(errors)))
        return results

    async def play(self, ep: Episode, tools: list[ToolSpec], first_turn: int = 0,
                   branch_at: Callable[[Episode, int], bool] | None = None) -> int | None:
        """Play turns from `first_turn` until the episode stops (None), or until a later turn is a branch point
        (`branch_at(ep, turn)`): that turn, not played yet, from which a tree's branches go on."""
        chat = ep.chat
        schemas = self._schemas(tools)
        offered = {t.name for t in tools}
        for turn in range(first_turn, self.config.max_turns):
            if ep.stopped:
                return None
            if branch_at is not None and turn > first_turn and branch_at(ep, turn):
                return turn
            if self.rerender and turn > 0:
                ep.transcript.set_prompt(chat.prompt_ids(ep.messages, schemas, cache=False))
            gen = await ep.generate()
            if gen is None:
                return None
            parsed = self.parser(chat.decode(gen.token_ids), turn)
            ep.messages.append(Message(role="assistant", content=parsed.content, tool_calls=parsed.calls or None))
            if ep.stopped:  # cut by length or aborted: the text is incomplete, do not act on it
                return None
            if not parsed.calls and not parsed.errors:
                ep.stop("final_answer")
                return None
            results = await self.call_tools(ep, parsed.calls, offered, parsed.errors)
            if results is None:
                return None
            if turn == self.config.max_turns - 1:
                ep.messages.extend(results)
                ep.stop("max_turns", truncated=True)
                return None
            if self.rerender:  # the next prompt is re-rendered from the messages and checked then
                ep.messages.extend(results)
            elif not await ep.append(results):
                return None
        return None


    async def replay(self, start: Episode, ctx: EpisodeContext) -> None:
        """Bring the fresh session `ctx.session_id` to where `start` stands: seed it and make its tool calls
        again; raises when a call's result is not the one recorded."""
        env, cap = ctx.env, ctx.config.max_tool_output_chars
        calls = [c for m in start.messages if m.role == "assistant" for c in (m.tool_calls or [])]
        await env.seed_session(ctx.session_id, start.task)
        for record, call in zip(start.tool_records, calls, strict=True):
            if record.get("status") != NOT_OFFERED:
                out = cap_output(str(await env.call_tool(ctx.session_id, call)), cap)[0]
                if digest(out) != record.get("sha256"):
                    raise ValueError(f"tool {call.name} answered otherwise than before the branch point")


def _parse_error_message(errors: list[str]) -> str:
    return "Error: " + "; ".join(errors) + f". Call a tool as {HERMES_FORMAT_HINT}, or answer without a tool call."
