"""judge: an LLM judge grades answers against the reference; judge failures are errors, not zeros."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from env_helpers import score
from gym_ray_env_judge.server import Judge

from gym_ray.config import ModelConfig, load_config
from gym_ray.resources.client import make_env_client
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.tasks import load_tasks
from gym_ray.types import Task

ENV_DIR = Path(__file__).parents[2] / "environments" / "judge"


class RuleJudge:
    """A PolicyClient that really reads the judge prompt: correct iff the reference's first word is in the answer."""

    model_name = "rule-judge"

    def __init__(self, fail: Exception | None = None, reply: str | None = None):
        self.fail, self.reply, self.calls = fail, reply, 0

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        raise NotImplementedError

    async def chat(self, messages, tools, sampling):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        prompt = messages[-1].content
        reference = re.search(r"Reference answer:\n(.+?)\n", prompt).group(1)
        answer = re.search(r"Student's answer:\n(.+?)\n\nIs the student", prompt, re.S).group(1)
        verdict = "[[CORRECT]]" if reference.split()[0].lower() in answer.lower() else "[[INCORRECT]]"
        return {
            "choices": [{"message": {"role": "assistant", "content": self.reply or f"Compared.\n{verdict}"}}]
        }

    def tokenizer_path(self) -> str:
        return ""


def tasks() -> list[Task]:
    return load_tasks(load_config(ENV_DIR / "config.yaml").envs["judge"].data)




def test_right_wrong_and_malformed_answers():
    judge = RuleJudge()
    env = EnvRuntime(Judge(client=judge))
    rows = tasks()
    assert len(rows) >= 5
    for task in rows:
        reference = task.verifier_metadata["reference_answer"]
        right = score(env, task, f"I am fairly sure it is {reference}.")
        assert right.reward == 1.0 and right.error is None and right.info["judge_model"] == "rule-judge"
        wrong = score(env, task, "It is Atlantis.")
        assert wrong.reward == 0.0 and wrong.error is None and "incorrect" in wrong.info["reason"]
    calls = judge.calls
    malformed = score(env, rows[0], None)
    assert malformed.reward == 0.0 and malformed.info["reason"] == "no final answer" and judge.calls == calls


def test_judge_failures_are_reported_as_errors():
    task = tasks()[0]
    down = score(EnvRuntime(Judge(client=RuleJudge(fail=TimeoutError("judge timed out")))), task, "Paris")
    assert (
        down.error and "judge call failed: TimeoutError: judge timed out" in down.error and down.reward == 0.0
    )
    rambling = score(
        EnvRuntime(Judge(client=RuleJudge(reply="Hard to say, both seem plausible."))), task, "Paris"
    )
    assert rambling.error and "verdict" in rambling.error
    assert rambling.info["judge_output"] == "Hard to say, both seem plausible."


def test_config_builds_a_client_for_the_named_model():
    # `judge: ${model}` follows the policy; a scripted policy keeps vLLM out of this unit test
    cfg = load_config(ENV_DIR / "config.yaml", ["model.kind=scripted"])
    assert cfg.envs["judge"].config["judge"]["kind"] == "scripted"
    server = make_env_client("judge", cfg.envs["judge"]).runtime.server
    assert server.client.model_name == "policy" and server.client.app_name == "policy"
    assert server.sampling.temperature == 0.0 and server.sampling.max_tokens == 256
    with pytest.raises(ValueError, match=r"judge: name the judge model"):
        Judge()


@pytest.mark.slow  # starts Ray and Serve (~20 s idle, over a minute on a busy machine)
def test_scripted_judge_deployed_on_serve(serve_http_port):
    """The whole path: config -> make_policy_client -> Serve handle -> chat -> verdict."""
    from gym_ray.models import delete_policy, deploy_policy

    judge_cfg = ModelConfig(kind="scripted", name="judge", replies=["The answers agree.\n[[CORRECT]]"])
    deploy_policy(judge_cfg, "test-judge")
    try:
        env = EnvRuntime(Judge(judge=judge_cfg.model_dump(), judge_app="test-judge"))
        result = score(env, tasks()[0], "Paris")
        assert result.reward == 1.0 and result.error is None, result
        assert result.info["judge_output"].endswith("[[CORRECT]]")
    finally:
        delete_policy("test-judge")
