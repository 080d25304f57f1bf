"""reasoning-gym: any of its procedural datasets, scored by the dataset's own `score_answer`."""

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import verify_reasoning_gym


class ReasoningGym(ResourceServer):
    verifier = "the dataset's own `score_answer`"
    origin = "reasoning-gym (package)"

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    async def score(self, task, answer):
        entry = {k: v for k, v in task.verifier_metadata.items() if k in ("question", "answer", "metadata")}
        return await verify_reasoning_gym(answer, entry, timeout_s=self.timeout_s)
