"""reasoning-gym: any of its procedural datasets, scored by the dataset's own `score_answer`."""

from gym_ray.resources import ResourceServer, VerifyResult, final_answer
from gym_ray.resources.verifiers import verify_reasoning_gym


class ReasoningGym(ResourceServer):
    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    async def verify(self, task, messages):
        answer = final_answer(messages)
        if answer is None:
            return VerifyResult(reward=0.0, info={"reason": "no final answer"})
        entry = {k: v for k, v in task.verifier_metadata.items() if k in ("question", "answer", "metadata")}
        return await verify_reasoning_gym(answer, entry, timeout_s=self.timeout_s)
