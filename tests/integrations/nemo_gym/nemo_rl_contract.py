"""NeMo-RL's reading of a NeMo Gym `/run` result, re-implemented: NeMo-RL does not install on Python 3.11.

From `_postprocess_nemo_gym_to_nemo_rl_result` (nemo_rl/experience/rollouts.py:752-1017, HEAD 7ea279ab).
"""

from __future__ import annotations

import math


def nemo_rl_message_log(result: dict) -> list[dict]:
    """NeMo-RL's reading of one /run result: alternating prompt-delta / generation entries, with its
    contiguity assertion and its refusal of a result without generation data or with NaN logprobs."""
    seen: list[int] = []
    log: list[dict] = []
    for item in result["response"]["output"]:
        if not item.get("generation_token_ids"):
            continue
        prompt = item["prompt_token_ids"]
        assert seen == prompt[: len(seen)], "Non-contiguous messages found!"
        log.append({"role": "user", "token_ids": prompt[len(seen):]})
        if any(math.isnan(x) for x in item["generation_log_probs"]):
            raise RuntimeError("NaN logprobs")
        assert len(item["generation_log_probs"]) == len(item["generation_token_ids"])
        log.append({"role": "assistant", "token_ids": item["generation_token_ids"],
                    "generation_logprobs": item["generation_log_probs"]})
        seen = prompt + item["generation_token_ids"]
    if not log:
        raise ValueError("no generation data")
    return log
