"""Judge: an LLM decides whether the final answer matches the task's reference answer.

The judge is a model of the run: `config.judge` is its ModelConfig (in YAML, `${model}` to judge with
the policy's own deployment, or `${models.<name>}`) and `config.judge_app` the Serve app it runs as.
"""

from gym_ray import ResourceServer
from gym_ray.clients import PolicyClient
from gym_ray.config import ModelConfig, SamplingConfig
from gym_ray.resources.verifiers import JUDGE_PROMPT, verify_with_judge


class Judge(ResourceServer):
    verifier = "an LLM judge against a reference answer"
    origin = "native"

    def __init__(
        self,
        judge: dict | None = None,
        judge_app: str | None = None,
        sampling: dict | None = None,
        prompt: str = JUDGE_PROMPT,
        client: PolicyClient | None = None,
    ):
        if client is None:
            if judge is None:
                raise ValueError(
                    "judge: name the judge model, e.g. `judge: ${model}` or `judge: ${models.judge}`"
                )
            from gym_ray.models import make_policy_client

            cfg = ModelConfig.model_validate(judge)
            client = make_policy_client(cfg, judge_app or cfg.name)
        self.client = client
        self.sampling = SamplingConfig.model_validate(
            {"temperature": 0.0, "max_tokens": 512, **(sampling or {})}
        )
        self.prompt = prompt

    async def score(self, task, answer):
        meta = task.verifier_metadata
        question = meta.get("question") or next(m.content for m in reversed(task.prompt) if m.role == "user")
        return await verify_with_judge(
            question,
            answer,
            str(meta["reference_answer"]),
            self.client,
            sampling=self.sampling,
            prompt=self.prompt,
        )
