"""Tree rollouts: one episode branched into `width` continuations at each of its first `depth` branch points.

At a branch point the node's env session is forked (one copy per branch) and its episode (transcript,
messages, counters) copied, so the shared prefix is generated once and each branch goes on alone; the node's
own session is then freed (with `token_entropy` a node plays to its end first, keeping a snapshot before each
model call, and branches in hindsight where its sampled tokens were least likely). Every leaf is verified and becomes a row; a node whose episode ends before its
next branch point is a leaf too. All branches of a tree call the policy with their root's session id, so one
replica's prefix cache serves the shared prefix. A failure ends only its own node's subtree, as one masked
leaf row with a status; a branch whose session was lost (its env replica died) is first re-run from its
branch point on a fresh session, brought there by the agent's `replay` (its recorded tool calls or env steps
made again). The agent is any `TurnLoop`: the tool-calling agent and the env-step agent both are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gym_ray.agents.base import EpisodeContext, infra_failure
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.agents.episode import Episode
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import TreeConfig
from gym_ray.episodes.guard import EnvCallError, PolicyCallError
from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.types import Rollout, Task, ToolSpec

RERUNS = 2  # times a branch whose session was lost is played again from its branch point

BRANCH_POINTS: dict[str, Callable[[Episode, int], bool]] = {
    "assistant_turn": lambda ep, turn: True,  # (every model call after a node's first)
    "tool_call": lambda ep, turn: ep.messages[-1].role == "tool",
}


def _every_turn(ep: Episode, turn: int) -> bool:
    return True


def turn_surprisal(ep: Episode, call: int) -> float:
    """Mean -logprob of the tokens model call `call` sampled: how unsure the policy was there."""
    for seg in ep.transcript.segments:
        if call in seg.calls:
            k = seg.calls.index(call)
            logprobs = seg.response_logprobs[seg.gen_span_starts[k]:seg.gen_span_ends[k]]
            return -sum(logprobs) / len(logprobs) if logprobs else 0.0
    return 0.0


async def _close_all(episodes: list[Episode]) -> None:
    """Free snapshot sessions no branch starts from."""
    await asyncio.gather(*(e.close() for e in episodes))


class TurnLoop(Protocol):
    """What a tree drives: an agent whose episode is `start`, `admit`, `play` (stopping at branch points),
    then `finish`; `replay` brings a fresh session to a branch point again."""

    async def start(self, task: Task, ctx: EpisodeContext) -> tuple[Episode, list[ToolSpec] | None]: ...
    def admit(self, ep: Episode, tools: list[ToolSpec]) -> None: ...
    async def play(self, ep: Episode, tools: list[ToolSpec], first_turn: int = 0,
                   branch_at: Callable[[Episode, int], bool] | None = None) -> int | None: ...
    async def replay(self, start: Episode, ctx: EpisodeContext) -> None: ...
    async def finish(self, ep: Episode) -> list[Rollout]: ...


TURN_LOOPS = (ToolCallingAgent, EnvStepAgent)


def branch_refusal(agent: object, at: str) -> str | None:
    """Why `agent` cannot be played as trees branching `at`, in one line; None when it can. Trees need a
    `TurnLoop` agent's own loop: a subclass with a loop of its own cannot branch."""
    cls = type(agent)
    base = next((b for b in TURN_LOOPS if isinstance(agent, b)), None)
    if base is None or cls._loop is not base._loop or cls.run is not base.run:
        return (f"needs an agent with a turn loop to branch ({', '.join(b.__name__ for b in TURN_LOOPS)}); "
                f"{cls.__name__} has a loop of its own")
    if at == "tool_call" and base is EnvStepAgent:
        return "at: tool_call needs tool calls; EnvStepAgent's actions are env steps (use assistant_turn or token_entropy)"
    return None


@dataclass
class Node:
    ep: Episode
    node_id: str
    parent_node_id: str
    level: int  # branch points above this node
    offset: int = 0  # tokens shared with its siblings
    offset_segment: int = 0  # the transcript segment the branch point is in
    start: Episode | None = None  # a copy of the episode at its branch point (to re-run a lost branch from)
    reruns: int = 0


class TreePlayer:
    """Plays one tree: `run(ctx, task)` -> the leaves' rows (with the tree columns)."""

    def __init__(self, agent: TurnLoop, tree: TreeConfig, tree_id: str, timeout_s: float,
                 infra: tuple[type[BaseException], ...]) -> None:
        self.agent = agent
        self.tree = tree
        self.tree_id = tree_id
        self.timeout_s = timeout_s
        self.infra = infra
        self.branch_at = BRANCH_POINTS.get(tree.at)

    async def run(self, task, ctx: EpisodeContext) -> list[tuple[Node, list[Rollout]]]:
        ctx = dataclasses.replace(ctx, policy_session_id=ctx.policy_session_id or ctx.session_id)
        root = Node(Episode(task, ctx), "0", "", 0)
        try:
            root.ep, tools = await asyncio.wait_for(self.agent.start(task, ctx), self.timeout_s)
            if tools is not None:
                self.agent.admit(root.ep, tools)
        except BaseException as e:  # noqa: BLE001 - any failure ends this node as a masked leaf
            self._failed(root.ep, e)
            tools = None
        if tools is None:
            return await self._leaf(root)
        return await self._grow(root, tools, 0)

    async def _grow(self, node: Node, tools, first_turn: int) -> list[tuple[Node, list[Rollout]]]:
        if self.tree.at == "token_entropy":
            return await self._grow_in_hindsight(node, tools, first_turn, [])
        branch_at = self.branch_at if node.level < self.tree.depth else None
        try:
            turn = await asyncio.wait_for(self.agent.play(node.ep, tools, first_turn, branch_at), self.timeout_s)
        except BaseException as e:  # noqa: BLE001 - any failure ends this node as a masked leaf
            if isinstance(e, self.infra) and await self._rerun(node):
                return await self._grow(node, tools, first_turn)
            self._failed(node.ep, e)
            turn = None
        if turn is None:
            return await self._leaf(node)
        children = self._children(node)
        ep = node.ep
        try:
            await ep.ctx.env.fork_session(ep.ctx.session_id, [c.ep.ctx.session_id for c in children])
        except BaseException as e:  # noqa: BLE001 - the branches never started: this node is a failed leaf
            self._failed(ep, e, FailureStage.SEED)
            return await self._leaf(node)
        await ep.close()
        grown = await asyncio.gather(*(self._grow(c, tools, turn) for c in children))
        return [leaf for leaves in grown for leaf in leaves]

    async def _leaf(self, node: Node) -> list[tuple[Node, list[Rollout]]]:
        """Verify the leaf and free its session; a verify that fails or outlives the time limit makes it a
        masked row with a status."""
        try:
            return [(node, await asyncio.wait_for(self.agent.finish(node.ep), self.timeout_s))]
        except BaseException as e:  # noqa: BLE001 - any failure ends this leaf as a masked row
            self._failed(node.ep, e)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.ep.close(), 10)
            return [(node, node.ep.rows())]

    def _children(self, node: Node, source: Episode | None = None, first: int = 0) -> list[Node]:
        """Branches `first`.. of `node`: copies of `source` (default: its episode, at the branch point), each
        with its own session id and its first leaf's place in the full tree."""
        ep, source = node.ep, source or node.ep
        step = self.tree.width ** (self.tree.depth - node.level - 1)
        offset, segment = len(source.transcript), len(source.transcript.segments) - 1
        children = []
        for k in range(first, self.tree.width):
            index = ep.ctx.rollout_index + k * step
            node_id = f"{node.node_id}.{k}"
            ctx = dataclasses.replace(ep.ctx, session_id=f"{ep.ctx.policy_session_id}.n{node_id}", rollout_index=index,
                                      rollout_id=f"{ep.ctx.group_id}-{index}")
            children.append(Node(source.fork(ctx), node_id, node.node_id, node.level + 1, offset, segment,
                                 start=source.fork(ctx)))
        return children

    async def _rerun(self, node: Node) -> bool:
        """Put a branch whose session was lost back at its branch point: a fresh session that the agent's
        `replay` brings there; False (the branch stays failed) when it has no branch point, has been re-run
        `RERUNS` times, or the environment answers otherwise than it did before the branch point."""
        if node.start is None or node.reruns >= RERUNS:
            return False
        node.reruns += 1
        start = node.start
        ctx = dataclasses.replace(start.ctx, session_id=f"{start.ctx.session_id}.r{node.reruns}")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.ep.close(), 10)
        try:
            await self.agent.replay(start, ctx)
        except Exception:  # noqa: BLE001 - a branch that cannot be brought back stays failed
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ctx.env.close_session(ctx.session_id), 10)
            return False
        node.ep = start.fork(ctx)
        return True

    async def _grow_in_hindsight(self, node: Node, tools, first_turn: int,
                                 snapshots: list[tuple[int, Episode]]) -> list[tuple[Node, list[Rollout]]]:
        """`token_entropy`: play the node to its end, keeping a snapshot (a forked session and a copy of the
        episode) before each model call; then branch at the call whose sampled tokens were least likely (the
        highest mean -logprob): the node's own ending is branch 0, the others go on from that snapshot."""
        ep = node.ep
        turn: int | None = first_turn
        try:
            while node.level < self.tree.depth:
                turn = await asyncio.wait_for(self.agent.play(ep, tools, turn, _every_turn), self.timeout_s)
                if turn is None:
                    break
                sid = f"{ep.ctx.session_id}.s{turn}"
                await ep.ctx.env.fork_session(ep.ctx.session_id, [sid])
                snapshots.append((turn, ep.fork(dataclasses.replace(ep.ctx, session_id=sid))))
            else:
                await asyncio.wait_for(self.agent.play(ep, tools, turn), self.timeout_s)
        except BaseException as e:  # noqa: BLE001 - any failure ends this node as a masked leaf
            self._failed(ep, e)
        if ep.status != Status.OK or not snapshots or node.level >= self.tree.depth:
            await _close_all([snap for _, snap in snapshots])
            return await self._leaf(node)
        turn, snap = max(snapshots, key=lambda s: turn_surprisal(ep, s[0]))
        later = [(t, s) for t, s in snapshots if t > turn]
        await _close_all([s for t, s in snapshots if t < turn])
        others = self._children(node, snap, first=1)
        try:
            await ep.ctx.env.fork_session(snap.ctx.session_id, [c.ep.ctx.session_id for c in others])
        except BaseException as e:  # noqa: BLE001 - the branches never started: this node is a failed leaf
            self._failed(ep, e, FailureStage.SEED)
            await _close_all([snap, *(s for _, s in later)])
            return await self._leaf(node)
        await snap.close()
        own = Node(ep, f"{node.node_id}.0", node.node_id, node.level + 1, len(snap.transcript),
                   len(snap.transcript.segments) - 1)
        grown = await asyncio.gather(self._grow_in_hindsight(own, tools, turn, later),
                                     *(self._grow_in_hindsight(c, tools, turn, []) for c in others))
        return [leaf for leaves in grown for leaf in leaves]

    def _failed(self, ep: Episode, e: BaseException, stage: FailureStage | None = None) -> None:
        """Record why this node stopped; a cancelled tree is cancelled, not recorded."""
        if isinstance(e, asyncio.CancelledError):
            raise e
        stage = stage or ep.ctx.stage
        if isinstance(e, TimeoutError):
            ep.fail(Status.TIMEOUT, f"tree node exceeded {self.timeout_s:g} s (during {stage.value})",
                    Failure(stage=stage, kind=FailureKind.TIMEOUT))
        elif isinstance(e, self.infra):
            ep.fail(Status.INFRA_ERROR, f"{type(e).__name__}: {e}", infra_failure(e, stage))
        elif isinstance(e, EnvCallError):
            ep.fail(Status.ENV_ERROR, str(e), Failure(stage=stage, kind=FailureKind.EXCEPTION))
        elif isinstance(e, PolicyCallError):
            ep.fail(Status.MODEL_ERROR, str(e), Failure(stage=FailureStage.GENERATE, kind=FailureKind.EXCEPTION))
        elif isinstance(e, Exception):
            tb = "".join(traceback.format_exception(e)[-3:])
            ep.fail(Status.ABORTED, f"agent raised {type(e).__name__}: {e}\n{tb}",
                    Failure(stage=FailureStage.AGENT, kind=FailureKind.EXCEPTION))
        else:
            raise e


def tree_rows(tree_id: str, node: Node, rows: list[Rollout]) -> list[Rollout]:
    """A leaf's rows with the tree columns: segments before its branch point are shared whole, the one it
    branched in up to the offset, later ones not at all."""
    for row in rows:
        row.tree_id, row.node_id, row.parent_node_id = tree_id, node.node_id, node.parent_node_id
        size = len(row.prompt_token_ids) + len(row.response_token_ids)
        if row.segment_index < node.offset_segment:
            row.branch_token_offset = size
        elif row.segment_index == node.offset_segment:
            row.branch_token_offset = min(node.offset, size)
        else:
            row.branch_token_offset = 0
    return rows
