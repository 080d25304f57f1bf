"""Math: the final answer is checked with math-verify (boxed or plain), with a per-answer timeout."""

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import verify_math


class Math(ResourceServer):
    verifier = "math-verify against the expected answer"
    origin = "native"
    metric = "accuracy"

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    async def score(self, task, answer):
        expected = str(task.verifier_metadata["expected_answer"])
        return await verify_math(answer, expected, timeout_s=self.timeout_s)
