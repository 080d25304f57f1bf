"""Weight updates while generations are in flight: the gate, the registry and the cut-and-continue loop the
hosted policies (vLLM, scripted) share.

A trainer brackets each weight load with `begin(mode)` and `end(version)`:

- `finish`: generations in flight complete under the old weights; new ones wait at the gate until `end`.
- `abort`: generations in flight are cut; each waits at the gate and continues after `end` from the same
  token prefix under the new weights, so one call returns one part per version (a span each in the
  transcript: partial rollouts).
- `drop`: generations in flight are cut and returned as they stand, finish reason `weight_update`; the
  agent ends the episode `aborted` (a masked row).

A generation's version is read when it passes the gate, and the gate is shut from `begin` until `end`, so
every token is stamped with the weights that sampled it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MODES = ("finish", "abort", "drop")
CUT = "weight_update"  # the finish reason of a part cut by a weight update


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"weight update mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


@dataclass(eq=False)
class Call:
    """One engine request under one policy version; `cut` is the mode of the update that cut it."""

    version: int
    cut: str | None = None
    request_id: str | None = None
    tokens: int = 0  # sampled so far (policies that report progress)


@dataclass
class Part:
    """The tokens one request sampled under one version."""

    token_ids: list[int]
    logprobs: list[float]
    version: int
    finish_reason: str
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# run(prompt_token_ids, max_tokens, call) -> the part it sampled; a cut request ends with finish reason "abort"
Runner = Callable[[list[int], int, Call], Awaitable[Part]]


class WeightUpdates:
    """The gate new generations pass, and the generations in flight, of one policy replica."""

    def __init__(self, version: int = 0):
        self.version = version
        self.mode: str | None = None  # the update under way
        self.calls: set[Call] = set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def paused(self) -> bool:
        return not self._gate.is_set()

    async def enter(self) -> Call:
        while not self._gate.is_set():  # woken by one update's end, it may meet the next one's begin
            await self._gate.wait()
        call = Call(self.version)
        self.calls.add(call)
        self._idle.clear()
        return call

    def leave(self, call: Call) -> None:
        self.calls.discard(call)
        if not self.calls:
            self._idle.set()

    async def begin(self, mode: str, cut: Callable[[list[Call]], Awaitable[None]] | None = None) -> int:
        """Shut the gate, cut what runs (`abort`, `drop`) and return once nothing runs: the weights may
        load. Returns how many generations were cut."""
        check_mode(mode)
        if self.mode is not None:
            raise RuntimeError(f"a weight update ({self.mode}) is already under way")
        self.mode = mode
        self._gate.clear()
        running = [c for c in self.calls if c.cut is None]
        if mode != "finish" and running:
            for c in running:
                c.cut = mode
            if cut is not None:
                await cut(running)
        await self._idle.wait()
        return len(running) if mode != "finish" else 0

    def end(self, version: int) -> None:
        """The new weights are in: stamp `version` on what passes the gate from now, and open it."""
        self.version = version
        self.mode = None
        self._gate.set()

    async def generate(self, run: Runner, prompt_token_ids: list[int], max_tokens: int) -> list[Part]:
        """One model call through the gate: one part, or (`abort` updates) one part per version."""
        parts: list[Part] = []
        ids = list(prompt_token_ids)
        while True:
            call = await self.enter()
            try:
                part = await run(ids, max_tokens - (len(ids) - len(prompt_token_ids)), call)
            finally:
                self.leave(call)
            was_cut = call.cut is not None and part.finish_reason == "abort"
            if was_cut:
                part.finish_reason = CUT
            if part.token_ids or not was_cut or call.cut == "drop":
                parts.append(part)
            if not was_cut or call.cut == "drop":
                return parts
            ids.extend(part.token_ids)


def merged(parts: list[Part], model: str) -> dict:
    """The parts of one call as one generation (a `Generation`'s fields); a call cut and continued lists its
    parts in `extra["parts"]`: [tokens, policy version, finish reason] each."""
    out = {
        "token_ids": [t for p in parts for t in p.token_ids],
        "logprobs": [x for p in parts for x in p.logprobs],
        "finish_reason": parts[-1].finish_reason,
        "model": model,
        "policy_version": parts[-1].version,
        "text": "".join(p.text for p in parts),
        "extra": dict(parts[0].extra),
    }
    if len(parts) > 1:
        out["extra"]["parts"] = [[len(p.token_ids), p.version, p.finish_reason] for p in parts]
    return out
