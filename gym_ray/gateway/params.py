"""What an agent program's request may set, checked as OpenAI and vLLM check it.

The run's sampling is what the trainer learns from, so a request never changes the distribution the policy
samples from. Sampling parameters are validated with OpenAI's / vLLM's ranges (an invalid value answers 400
in their error shape, naming the parameter); a valid one that differs from the run's is not applied but
reported: in the answer (`ignored_params`: parameter -> what was done instead) and in the row
(`ignored_params`: parameter -> calls). The same holds for the accepted parameters the gateway has no use
for (`user`, `metadata`, ...). A request may shorten a call, add stop strings and ask for logprobs or token
ids. What the gateway cannot do (n > 1, forced tool calls, structured output, top logprobs, server-side
state) and any parameter it does not know answer 400: nothing is silently dropped. The table is in
`gym_ray/agents/README.md`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gym_ray.config import SamplingConfig

_INT64 = (-(2**63), 2**63 - 1)


class GatewayError(Exception):
    """An error the gateway answers with an HTTP status and an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code or str(self.status)}}


def invalid(param: str, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, f"Invalid '{param}': {message}", code=code, param=param)


@dataclass
class Request:
    """A validated request's settings for the call (the messages are parsed apart)."""

    sampling: SamplingConfig
    max_tokens_param: str | None = None  # which parameter set the call's length, if any
    ignored: dict[str, str] = field(default_factory=dict)  # parameter -> what the gateway did instead


# name -> (minimum, maximum, minimum excluded, integer): OpenAI's ranges, vLLM's where OpenAI has none.
_BOUNDS: dict[str, tuple[float, float | None, bool, bool]] = {
    "temperature": (0, 2, False, False),
    "top_p": (0, 1, True, False),
    "top_k": (-1, None, False, True),
    "min_p": (0, 1, False, False),
    "presence_penalty": (-2, 2, False, False),
    "frequency_penalty": (-2, 2, False, False),
    "repetition_penalty": (0, None, True, False),
    "seed": (*_INT64, False, True),
    "max_tokens": (1, None, False, True),
    "max_completion_tokens": (1, None, False, True),
    "max_output_tokens": (1, None, False, True),
    "n": (1, 128, False, True),
    "top_logprobs": (0, 20, False, True),
}


def _number(body: dict, name: str) -> Any:
    v = body.get(name)
    if v is None:
        return None
    lo, hi, lo_open, integer = _BOUNDS[name]
    kind = "integer" if integer else "decimal"
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise invalid(name, f"expected {'an integer' if integer else 'a number'}, but got {type(v).__name__} "
                            "instead.", "invalid_type")
    if not math.isfinite(v):
        raise invalid(name, f"expected a finite number, but got {v} instead.")
    if v < lo or (lo_open and v == lo):
        raise invalid(name, f"{kind} below minimum value. Expected a value {'>' if lo_open else '>='} {lo}, "
                            f"but got {v} instead.", f"{kind}_below_min_value")
    if hi is not None and v > hi:
        raise invalid(name, f"{kind} above maximum value. Expected a value <= {hi}, but got {v} instead.",
                      f"{kind}_above_max_value")
    return v


def _flag(body: dict, name: str) -> bool:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise invalid(name, f"expected a boolean, but got {type(v).__name__} instead.", "invalid_type")
    return bool(v)


def _run_values(run: SamplingConfig) -> dict[str, Any]:
    """The run's value of each sampling parameter a request may name (vLLM's neutral one where the run has none)."""
    return {"temperature": run.temperature, "top_p": run.top_p, "top_k": run.top_k, "min_p": 0,
            "presence_penalty": 0, "frequency_penalty": 0, "repetition_penalty": 1, "seed": run.seed}


# Accepted, never applied: OpenAI's service bookkeeping and behaviour the policy cannot be held to. Reported
# when set to anything but the value that asks for nothing.
_NOT_APPLIED: dict[str, Any] = {
    "parallel_tool_calls": True, "user": None, "metadata": None, "store": False, "service_tier": None,
    "prompt_cache_key": None, "prompt_cache_retention": None, "safety_identifier": None,
    "reasoning_effort": None, "verbosity": None,
}
_CHAT = {"model", "messages", "tools", "tool_choice", "stream", "stream_options", "max_tokens",
         "max_completion_tokens", "stop", "n", "logprobs", "top_logprobs", "return_token_ids", "response_format",
         "logit_bias", *_run_values(SamplingConfig()), *_NOT_APPLIED}
_RESPONSES = {"model", "input", "instructions", "tools", "tool_choice", "stream", "stream_options",
              "max_output_tokens", "temperature", "top_p", "top_logprobs", "include", "text", "reasoning",
              "truncation", "max_tool_calls", "previous_response_id", "conversation", "prompt", "background",
              *(_NOT_APPLIED.keys() - {"reasoning_effort", "verbosity"})}


def _unknown(body: dict, known: set[str]) -> None:
    for k in body:
        if k not in known:
            raise GatewayError(400, f"Unrecognized request argument supplied: {k}", code="unknown_parameter",
                               param=k)


def _sampling(body: dict, run: SamplingConfig, window: int, max_names: tuple[str, ...]) -> Request:
    """The call's sampling: the run's, shortened to the request's length limit, plus its stop strings."""
    req = Request(sampling=run)
    run_values = _run_values(run)
    for name, used in run_values.items():
        v = _number(body, name)
        if v is not None and v != used and not (name == "top_k" and v in (0, -1) and used in (0, -1)):
            req.ignored[name] = f"the run's {name}={used} is used"
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict) or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                 and -100 <= b <= 100 for b in bias.values()):
            raise invalid("logit_bias", "expected an object of token ids to numbers in [-100, 100].")
        if bias:
            req.ignored["logit_bias"] = "the run samples without a logit bias"
    update: dict[str, Any] = {}
    lengths = [(name, _number(body, name)) for name in max_names]
    for name, asked in lengths:
        if asked is not None and asked > window:
            raise invalid(name, f"{name}={asked} cannot be greater than the episode's context window of "
                                f"{window} tokens. Please request fewer output tokens.")
    name, asked = next(((n, v) for n, v in lengths if v is not None), (None, None))
    if name is not None:
        req.max_tokens_param = name
        if asked > run.max_tokens:
            req.ignored[name] = f"capped at the run's max_tokens={run.max_tokens}"
        else:
            update["max_tokens"] = asked
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise invalid("stop", "expected a non-empty string or a list of non-empty strings.")
        if stops:
            update["stop"] = [*run.stop, *stops]
    if update:
        req.sampling = run.model_copy(update=update)
    for name, neutral in _NOT_APPLIED.items():
        if body.get(name) not in (None, neutral, "", {}, []):
            req.ignored[name] = "not applied by the gateway"
    return req


def check_chat(body: Any, run: SamplingConfig, window: int) -> Request:
    """A chat completions request's parameters, validated; the messages and tools are parsed apart."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object")
    _unknown(body, _CHAT)
    if (_number(body, "n") or 1) != 1:
        raise invalid("n", "only n=1 is supported: one call is one recorded generation.", "unsupported_value")
    stream = _flag(body, "stream")
    if body.get("stream_options") is not None and not stream:
        raise invalid("stream_options", "stream_options can only be set when stream is true.")
    req = _sampling(body, run, window, ("max_completion_tokens", "max_tokens"))
    logprobs = _flag(body, "logprobs")
    top = _number(body, "top_logprobs")
    if top and not logprobs:
        raise invalid("top_logprobs", "when using top_logprobs, logprobs must be set to true.")
    if top:
        raise invalid("top_logprobs", "the policy returns the sampled tokens' logprobs only; top_logprobs "
                                      "must be 0.", "unsupported_value")
    _flag(body, "return_token_ids")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise invalid("response_format", "only {'type': 'text'} is supported (the policy's output is not "
                                         "constrained).", "unsupported_value")
    return req


def check_responses(body: Any, run: SamplingConfig, window: int) -> Request:
    """A Responses request's parameters, validated (its input and tools become chat messages apart)."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object")
    _unknown(body, _RESPONSES)
    for key in ("previous_response_id", "conversation", "prompt", "background"):
        if body.get(key):
            raise invalid(key, "the gateway keeps no server-side state; send the whole input.", "unsupported_value")
    _flag(body, "stream")
    req = _sampling(body, run, window, ("max_output_tokens",))
    if _number(body, "top_logprobs"):
        raise invalid("top_logprobs", "the policy returns the sampled tokens' logprobs only; top_logprobs "
                                      "must be 0.", "unsupported_value")
    text = body.get("text")
    if text is not None:
        fmt = text.get("format") if isinstance(text, dict) else text
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
            raise invalid("text", "only the text format is supported (the policy's output is not constrained).",
                          "unsupported_value")
        if text.get("verbosity") is not None:
            req.ignored["text.verbosity"] = "not applied by the gateway"
    for name, neutral in (("include", None), ("reasoning", None), ("truncation", "disabled"),
                          ("max_tool_calls", None), ("stream_options", None)):
        if body.get(name) not in (None, neutral, "", {}, []):
            req.ignored[name] = "not applied by the gateway"
    return req
