"""The record of one tool call in a rollout row (`Rollout.tool_calls_json`): what replay and re-verification
compare a fresh session's answers with.

A record holds the call's id and name, a digest of its arguments, the result the model saw (cut to the
agent's `max_tool_output_chars`) when it is short, else only its sha256, its status and whether a cache
served it. Digests are of the text itself, so a record costs one hash per call.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Results up to this many characters are kept whole in the record; longer ones by their sha256 only.
RESULT_CAP = 512
OK, ERROR, NOT_OFFERED = "ok", "error", "not_offered"


class ToolOutput(str):
    """A tool's result text that says whether the replica's tool-result cache served it."""

    cached: bool = False

    @classmethod
    def of(cls, text: str, cached: bool) -> ToolOutput:
        out = cls(text)
        out.cached = cached
        return out


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def arguments_digest(arguments: dict[str, Any] | str | None) -> str:
    """The digest of a call's arguments, independent of key order (a string the model wrote is hashed as is)."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments or {}, sort_keys=True, ensure_ascii=False, default=str)
    return digest(arguments)


def tool_record(call_id: str, name: str, arguments: dict[str, Any] | str | None, result: str | None,
                status: str = OK, cached: bool = False) -> dict[str, Any]:
    """One call's record; `result` is the text the model was shown (None for a call never sent)."""
    record: dict[str, Any] = {"id": call_id, "name": name, "args_sha256": arguments_digest(arguments),
                              "status": status}
    if result is not None:
        record["chars"] = len(result)
        record["sha256"] = digest(result)
        if len(result) <= RESULT_CAP:
            record["result"] = result
    if cached:
        record["cached"] = True
    return record


def result_status(text: str) -> str:
    """`error` for the runtime's answer to a model mistake (unknown tool, bad arguments, a tool that raised)."""
    return ERROR if text.startswith("Error: ") else OK


def shown(record: dict[str, Any]) -> str:
    """The recorded result, or its digest when only that was kept: for a divergence report."""
    if "result" in record:
        return record["result"]
    if "sha256" in record:
        return f"<{record['chars']} characters, sha256 {record['sha256'][:16]}>"
    return "<not sent>"
