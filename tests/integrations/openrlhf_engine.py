"""An OpenRLHF `llm_engine` double: `RolloutRayActor.generate`'s signature and its real vLLM output objects,
with the tokens served by gym_ray's scripted policy (the only faked part is the engine's sampling)."""

from __future__ import annotations

import re

from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput, RequestOutput

from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.resources import ResourceServer

_RESULT = re.compile(r"The weather in (.+?) is (\w+), (-?\d+) °C\.")


def weather_script(prompt_text: str, turn: int):
    """Turn 0: call get_weather for the city asked about; then answer from the tool's result in the prompt."""
    if turn == 0:
        question = prompt_text.rsplit("<|im_start|>user\n", 1)[1]
        city = re.search(r"(?:in|for) ([A-Z][a-z]+(?: [A-Z][a-z]+)*)", question).group(1)
        return {"name": "get_weather", "arguments": {"city": city}}
    city, condition, temp = _RESULT.findall(prompt_text)[-1]
    return f"In {city} it is {condition}, {temp} °C."


BLACKJACK_REPLIES = ["I will hit. <action>hit</action>", "<action>stand</action>"]


class ScriptedEngine:
    """`await generate(prompt_token_ids, sampling_params, multi_modal_data=None) -> RequestOutput`.

    Logprobs are distinct per token (-(k+1)/100 for the k-th token served) so a test can tell whether each
    one landed at its token; they are attached only when the trainer asked (`sampling_params.logprobs`).
    Every call is recorded as (prompt ids, generated ids, logprobs).
    """

    def __init__(self, model_path: str, *, script: str | None = None, replies: list | None = None):
        cfg = ModelConfig(kind="scripted", name="scripted", script=script, replies=replies or [])
        self.policy = ScriptedPolicy(cfg, model_path)
        self.calls: list[tuple[list[int], list[int], list[float]]] = []
        self._served = 0

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None) -> RequestOutput:
        gen = await self.policy.generate(list(prompt_token_ids), SamplingConfig(max_tokens=sampling_params.max_tokens))
        logprobs = [-(self._served + k + 1) / 100 for k in range(len(gen.token_ids))]
        self._served += len(gen.token_ids)
        self.calls.append((list(prompt_token_ids), list(gen.token_ids), logprobs))
        sample_logprobs = None
        if sampling_params.logprobs is not None:
            sample_logprobs = [{t: Logprob(lp, rank=1)} for t, lp in zip(gen.token_ids, logprobs, strict=True)]
        out = CompletionOutput(index=0, text=gen.text, token_ids=list(gen.token_ids), cumulative_logprob=sum(logprobs),
                               logprobs=sample_logprobs, finish_reason=gen.finish_reason)
        return RequestOutput(request_id=f"r{len(self.calls)}", prompt=None, prompt_token_ids=list(prompt_token_ids),
                             prompt_logprobs=None, outputs=[out], finished=True)


class BrokenVerifier(ResourceServer):
    """An environment bug: its verifier raises, so every episode fails at verification."""

    def score(self, task, answer):
        raise RuntimeError("verifier exploded")
