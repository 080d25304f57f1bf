"""Math: the final answer is checked with math-verify (boxed or plain), with a per-answer timeout."""

from gym_ray.resources import ResourceServer, VerifyResult, final_answer
from gym_ray.resources.verifiers import verify_math


class Math(ResourceServer):
    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    async def verify(self, task, messages):
        answer = final_answer(messages)
        if answer is None:
            return VerifyResult(reward=0.0, info={"reason": "no final answer"})
        expected = str(task.verifier_metadata["expected_answer"])
        return await verify_math(answer, expected, timeout_s=self.timeout_s)
