"""The detectors: each turns a finished group into (hits, out of) and alerts when the share over its window
of recent groups crosses its threshold. An alert fires once on the way up; the detector re-arms when the
share falls back below the threshold."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from gym_ray.config import (
    CrossCheckMonitor,
    EnvConfig,
    GraderAddressingMonitor,
    LengthMonitor,
)
from gym_ray.monitors.signals import grader_pattern, json_list, most_repeated_call, no_reward_variance

_COLUMNS = ["rollout_id", "group_id", "task_id", "env", "status", "reward", "messages_json",
            "prompt_messages_json", "task_json"]


@dataclass(slots=True)
class Episode:
    """What the detectors read of one finished episode (its last segment's row)."""

    rollout_id: str
    ok: bool
    reward: float
    length: int  # response tokens of the row
    text: str  # what the model wrote: its assistant messages and tool-call arguments
    calls: list[str]  # its tool calls, `name(arguments)`
    task_json: str = "{}"
    messages_json: str = "[]"


@dataclass(slots=True)
class GroupView:
    group_id: str
    env: str
    task_id: str
    episodes: list[Episode] = field(default_factory=list)

    @property
    def finished(self) -> list[Episode]:
        return [e for e in self.episodes if e.ok]


@dataclass
class Alert:
    monitor: str
    on_alert: str
    value: float  # the share (or length ratio) that crossed the threshold
    threshold: float
    groups: int  # finished groups the monitor had seen when it fired
    detail: str
    group_id: str = ""
    rollout_id: str = ""
    example: str = ""
    time: float = field(default_factory=time.time)

    def line(self) -> str:
        at = f" (e.g. rollout {self.rollout_id}: {self.example!r})" if self.rollout_id else ""
        return f"{self.monitor} [{self.on_alert}] after {self.groups} groups: {self.detail}{at}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def groups_of(table: pa.Table) -> list[GroupView]:
    """The table's groups as the detectors see them: one Episode per episode (its last segment). Plain
    column reads, no Arrow compute kernels: a kernel call costs more than these few rows' Python."""
    seg, nseg = table["segment_index"].to_pylist(), table["num_segments"].to_pylist()
    last = [i for i, (s, n) in enumerate(zip(seg, nseg, strict=True)) if s == n - 1]
    lengths = [n for chunk in table["response_token_ids"].chunks for n in _list_lengths(chunk)]
    cols = {c: table[c].to_pylist() for c in _COLUMNS}
    prompt_len: dict[str, int] = {}  # the rollouts of a group share a prompt: parsed once
    groups: dict[str, GroupView] = {}
    for i in last:
        gid, prompt = cols["group_id"][i], cols["prompt_messages_json"][i]
        if prompt not in prompt_len:
            prompt_len[prompt] = len(json_list(prompt))
        text, calls = _generated(json_list(cols["messages_json"][i])[prompt_len[prompt]:])
        g = groups.get(gid) or groups.setdefault(gid, GroupView(gid, cols["env"][i], cols["task_id"][i]))
        g.episodes.append(Episode(cols["rollout_id"][i], cols["status"][i] == "ok", cols["reward"][i], lengths[i],
                                  text, calls, cols["task_json"][i], cols["messages_json"][i]))
    return list(groups.values())


def _list_lengths(chunk: pa.ListArray) -> list[int]:
    offsets = chunk.offsets.to_pylist()
    return [b - a for a, b in zip(offsets, offsets[1:], strict=False)]


def _generated(messages: list[dict]) -> tuple[str, list[str]]:
    texts, calls = [], []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        texts.append(m.get("content") or "")
        for c in m.get("tool_calls") or []:
            fn = c.get("function", c)
            args = fn.get("arguments")
            args = args if isinstance(args, str) else json.dumps(args, sort_keys=True)
            calls.append(f"{fn.get('name')}({args})")
            texts.append(args)
    return "\n".join(texts), calls




def _short(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


class Detector:
    """A share of hits over the last `window` groups, judged from `min_groups` on."""

    name = ""
    what = ""  # the alert's words for a hit

    def __init__(self, cfg: Any, envs: dict[str, EnvConfig]):
        self.cfg = cfg
        self.window: deque[tuple[float, float]] = deque(maxlen=cfg.window)
        self.seen = 0
        self.active = False
        self.example: tuple[str, str, str] = ("", "", "")  # the latest hit: group, rollout, excerpt

    def measure(self, group: GroupView) -> tuple[float, float] | None:
        """(hits, out of) for this group; None when the group says nothing (e.g. every rollout failed)."""
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        return self.cfg.share

    def value(self) -> float | None:
        hits, total = sum(h for h, _ in self.window), sum(t for _, t in self.window)
        return hits / total if total else None

    def firing(self, value: float) -> bool:
        return value >= self.threshold

    async def observe(self, group: GroupView) -> Alert | None:
        m = self.measure(group)
        if inspect.isawaitable(m):
            m = await m
        if m is None:
            return None
        self.seen += 1
        self._push(m)
        value = self.value()
        if self.seen < self.cfg.min_groups or value is None:
            return None
        firing = self.firing(value)
        fired, self.active = firing and not self.active, firing
        if not fired:
            return None
        gid, rid, excerpt = self.example
        return Alert(self.name, self.cfg.on_alert, round(value, 4), self.threshold, self.seen,
                     self.detail(value), gid, rid, excerpt)

    def _push(self, m: tuple[float, float]) -> None:
        self.window.append(m)

    def detail(self, value: float) -> str:
        return f"{value:.0%} of the last {len(self.window)} groups' {self.what} (threshold {self.threshold:.0%})"

    def hit(self, group: GroupView, episode: Episode | None = None, excerpt: str = "") -> None:
        self.example = (group.group_id, episode.rollout_id if episode else "", _short(excerpt))


class ZeroVariance(Detector):
    name, what = "zero_variance", "groups had no reward variance"

    def measure(self, group: GroupView) -> tuple[float, float] | None:
        if len(group.episodes) < 2:
            return None
        flat = no_reward_variance([e.reward for e in group.episodes])
        if flat:
            self.hit(group, None, f"all rewards {group.episodes[0].reward:g}")
        return float(flat), 1.0


class ModeCollapse(Detector):
    name, what = "mode_collapse", "groups wrote one identical output"

    def measure(self, group: GroupView) -> tuple[float, float] | None:
        done = group.finished
        if len(done) < 2:
            return None
        same = len({(e.text, tuple(e.calls)) for e in done}) == 1
        if same:
            self.hit(group, done[0], done[0].text)
        return float(same), 1.0


class GraderAddressing(Detector):
    name, what = "grader_addressing", "episodes addressed the grader and scored high"

    def __init__(self, cfg: GraderAddressingMonitor, envs: dict[str, EnvConfig]):
        super().__init__(cfg, envs)
        self.pattern = grader_pattern([e.server for e in envs.values()], cfg.patterns)

    def measure(self, group: GroupView) -> tuple[float, float] | None:
        done = group.finished
        if not done:
            return None
        hits = 0
        for e in done:
            if e.reward >= self.cfg.min_reward and (m := self.pattern.search(e.text)):
                hits += 1
                self.hit(group, e, e.text[max(0, m.start() - 40): m.end() + 40])
        return float(hits), float(len(done))

    def detail(self, value: float) -> str:
        return (f"{value:.0%} of the last {len(self.window)} groups' episodes name the grader with reward >= "
                f"{self.cfg.min_reward:g} (threshold {self.threshold:.0%})")


class ToolLoop(Detector):
    name = "tool_loop"

    def measure(self, group: GroupView) -> tuple[float, float] | None:
        if not group.episodes:
            return None
        hits = 0
        for e in group.episodes:
            if e.calls and most_repeated_call(e.calls) >= self.cfg.repeats:
                hits += 1
                self.hit(group, e, max(set(e.calls), key=e.calls.count))
        return float(hits), float(len(group.episodes))

    def detail(self, value: float) -> str:
        return (f"{value:.0%} of the last {len(self.window)} groups' episodes made one tool call "
                f"{self.cfg.repeats}+ times (threshold {self.threshold:.0%})")


class Length(Detector):
    """Mean response length over the window against the running mean of every group before it."""

    name = "length"

    def __init__(self, cfg: LengthMonitor, envs: dict[str, EnvConfig]):
        super().__init__(cfg, envs)
        self.base = [0.0, 0.0]  # tokens, episodes of the groups that left the window
        self.base_groups = 0

    def measure(self, group: GroupView) -> tuple[float, float] | None:
        done = group.finished
        if not done:
            return None
        longest = max(done, key=lambda e: e.length)
        self.hit(group, longest, longest.text)
        return float(sum(e.length for e in done)), float(len(done))

    def _push(self, m: tuple[float, float]) -> None:
        if len(self.window) == self.window.maxlen:
            tokens, n = self.window[0]
            self.base[0] += tokens
            self.base[1] += n
            self.base_groups += 1
        self.window.append(m)

    def value(self) -> float | None:
        mean = super().value()
        if mean is None or self.base_groups < self.cfg.min_groups or not self.base[0]:
            return None
        return mean / (self.base[0] / self.base[1])

    @property
    def threshold(self) -> float:
        return self.cfg.collapse

    def firing(self, value: float) -> bool:
        return value < self.cfg.collapse or value > self.cfg.explode

    def detail(self, value: float) -> str:
        way = "collapsed" if value < 1 else "exploded"
        return (f"response length {way}: the last {len(self.window)} groups average {value:.2f}x the "
                f"{self.base_groups} groups before them (alert below {self.cfg.collapse:g}x or above "
                f"{self.cfg.explode:g}x)")


class CrossCheck(Detector):
    """A second verifier on a sample of finished episodes (stable per rollout id); a hit is a disagreement
    on pass/fail. Fires when the window's share reaches `disagreement` and exceeds by `rise` the share of the
    first `min_groups` groups with samples."""

    name = "cross_check"

    def __init__(self, cfg: CrossCheckMonitor, envs: dict[str, EnvConfig]):
        super().__init__(cfg, envs)
        self.client = None
        self.errors = 0  # episodes the second verifier could not score (left out)
        self.start: list[float] = [0.0, 0.0]

    @property
    def threshold(self) -> float:
        return self.cfg.disagreement

    def _sampled(self, e: Episode) -> bool:
        return e.ok and zlib.crc32(e.rollout_id.encode()) / 2**32 < self.cfg.sample

    async def measure(self, group: GroupView) -> tuple[float, float] | None:
        sampled = [e for e in group.episodes if self._sampled(e)]
        if not sampled:
            return None
        second = await asyncio.gather(*(self._verify(e) for e in sampled))
        scored = [(e, r) for e, r in zip(sampled, second, strict=True) if r is not None]
        if not scored:
            return None
        t = self.cfg.pass_threshold
        hits = [(e, r) for e, r in scored if (e.reward >= t) != (r >= t)]
        if hits:
            e, r = hits[-1]
            self.hit(group, e, f"reward {e.reward:g}, second verifier {r:g}: {e.text}")
        m = float(len(hits)), float(len(scored))
        if self.seen < self.cfg.min_groups:
            self.start = [self.start[0] + m[0], self.start[1] + m[1]]
        return m

    async def _verify(self, e: Episode) -> float | None:
        from gym_ray.resources.local import LocalEnvClient
        from gym_ray.types import Message, Task

        if self.client is None:
            self.client = LocalEnvClient("cross_check", EnvConfig(server=self.cfg.server, config=self.cfg.config))
        sid = f"cross-check-{e.rollout_id}"
        try:
            task = Task.model_validate_json(e.task_json)
            messages = [Message.model_validate(m) for m in json_list(e.messages_json)]
            await self.client.seed_session(sid, task)
            try:
                return (await self.client.verify(sid, task, messages)).reward
            finally:
                await self.client.close_session(sid)
        except Exception:  # noqa: BLE001 - the second verifier's failure is counted, never taken as a verdict
            self.errors += 1
            return None

    def firing(self, value: float) -> bool:
        start = self.start[0] / self.start[1] if self.start[1] else 0.0
        return value >= self.cfg.disagreement and value - start >= self.cfg.rise

    def detail(self, value: float) -> str:
        start = self.start[0] / self.start[1] if self.start[1] else 0.0
        return (f"{self.cfg.server} disagrees with the run's verifier on {value:.0%} of the last "
                f"{len(self.window)} groups' sampled episodes (it began at {start:.0%}; threshold "
                f"{self.cfg.disagreement:.0%}, rise {self.cfg.rise:.0%})")


DETECTORS: dict[str, type[Detector]] = {d.name: d for d in (ZeroVariance, ModeCollapse, GraderAddressing,
                                                             ToolLoop, Length, CrossCheck)}
