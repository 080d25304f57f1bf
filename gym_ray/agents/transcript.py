"""The token-exact transcript: what the engine saw and sampled, kept as ids, never re-derived from text.

A transcript is a list of linear segments. Each segment starts from a prompt (rendered once) and grows
only by appending: generated ids exactly as sampled (mask 1, their logprobs, one span per model call)
and the chat template's token delta for messages added between calls (mask 0, logprob 0). Appending
keeps `prompt + response` equal to the next prompt by construction. A prompt built some other way
(`set_prompt`, e.g. a re-rendered history) is checked: if the current sequence is not its prefix, a new
segment starts; nothing is silently patched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from gym_ray.agents.tokenizer import ChatTokenizer
from gym_ray.types import Message


class TranscriptError(ValueError):
    """A model call's output cannot be stored token-exactly (e.g. logprobs do not match the ids)."""


@dataclass
class Segment:
    prompt_token_ids: list[int]
    response_token_ids: list[int] = field(default_factory=list)
    response_loss_mask: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    gen_span_starts: list[int] = field(default_factory=list)
    gen_span_ends: list[int] = field(default_factory=list)
    call_finish_reasons: list[str] = field(default_factory=list)
    gen_policy_versions: list[int] = field(default_factory=list)
    # Model calls whose output this segment holds (index over the whole episode).
    calls: list[int] = field(default_factory=list)

    def token_fields(self) -> dict:
        return {
            "prompt_token_ids": self.prompt_token_ids,
            "response_token_ids": self.response_token_ids,
            "response_loss_mask": self.response_loss_mask,
            "response_logprobs": self.response_logprobs,
            "gen_span_starts": self.gen_span_starts,
            "gen_span_ends": self.gen_span_ends,
            "call_finish_reasons": self.call_finish_reasons,
            "gen_policy_versions": self.gen_policy_versions,
        }


class Transcript:
    """Segments of one episode plus the running full sequence of the current one."""

    def __init__(self, chat: ChatTokenizer, prompt_token_ids: list[int]):
        self.chat = chat
        self.segments: list[Segment] = [Segment(list(prompt_token_ids))]
        self._full: list[int] = list(prompt_token_ids)
        self._last_generated: int | None = None
        self.num_calls = 0
        self.prefix_breaks: list[int] = []  # call indices that started a new segment

    @property
    def current(self) -> Segment:
        return self.segments[-1]

    def __len__(self) -> int:
        return len(self._full)

    def context(self) -> list[int]:
        """The exact ids to send as the next prompt (a copy)."""
        return list(self._full)

    def fork(self) -> Transcript:
        """An independent copy sharing nothing mutable (a tree's branch continues from here)."""
        other = copy.copy(self)
        other.segments = copy.deepcopy(self.segments)
        other._full = list(self._full)
        other.prefix_breaks = list(self.prefix_breaks)
        return other

    def add_generation(
        self, token_ids: list[int], logprobs: list[float], finish_reason: str, policy_version: int = 0,
        parts: list[list] | None = None,
    ) -> None:
        """Append one model call's output verbatim: mask 1, its logprobs, one span (with the policy
        version it was sampled under, for off-policy correction). A call a weight update cut and continued
        under new weights gives `parts` ([tokens, version, finish reason] each): one span per part."""
        if len(logprobs) != len(token_ids):
            raise TranscriptError(f"policy returned {len(logprobs)} logprobs for {len(token_ids)} token ids")
        parts = parts or [[len(token_ids), policy_version, finish_reason]]
        if sum(n for n, _, _ in parts) != len(token_ids):
            raise TranscriptError(f"policy returned parts of {[n for n, _, _ in parts]} tokens for "
                                  f"{len(token_ids)} token ids")
        seg = self.current
        start = len(seg.response_token_ids)
        seg.response_token_ids.extend(token_ids)
        seg.response_loss_mask.extend([1] * len(token_ids))
        seg.response_logprobs.extend(float(x) for x in logprobs)
        for n, version, reason in parts:
            seg.gen_span_starts.append(start)
            seg.gen_span_ends.append(start + n)
            seg.call_finish_reasons.append(reason)
            seg.gen_policy_versions.append(int(version))
            seg.calls.append(self.num_calls)  # the call of each span
            start += n
        self.num_calls += 1
        self._full.extend(token_ids)
        self._last_generated = token_ids[-1] if token_ids else None

    def delta_for(self, messages: list[Message]) -> list[int]:
        """Ids that appending `messages` (tool results, observations) adds after the last model turn,
        up to the next generation prompt; computed from the template, not from the history's text."""
        return self.chat.delta_ids(messages, self._last_generated)

    def add_context(self, token_ids: list[int]) -> None:
        """Append ids the model did not sample in this call (template glue, tool output): mask 0."""
        seg = self.current
        seg.response_token_ids.extend(token_ids)
        seg.response_loss_mask.extend([0] * len(token_ids))
        seg.response_logprobs.extend([0.0] * len(token_ids))
        self._full.extend(token_ids)

    def set_prompt(self, prompt_token_ids: list[int]) -> bool:
        """Make `prompt_token_ids` the next prompt. Returns True when it starts a new segment because the
        current sequence is not its prefix (the history was rewritten)."""
        n = len(self._full)
        if len(prompt_token_ids) >= n and prompt_token_ids[:n] == self._full:
            self.add_context(prompt_token_ids[n:])
            return False
        self.prefix_breaks.append(self.num_calls)
        self.segments.append(Segment(list(prompt_token_ids)))
        self._full = list(prompt_token_ids)
        return True
