"""Multiple choice: the chosen letter is read strictly (\\boxed{X} / "Answer: X") or leniently."""

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import verify_mcqa


class Mcqa(ResourceServer):
    verifier = "the option letter (strict or lenient extraction)"
    origin = "native"
    metric = "accuracy"

    def __init__(self, grading_mode: str = "strict"):
        self.grading_mode = grading_mode  # a task's verifier_metadata.grading_mode overrides it

    def score(self, task, answer):
        meta = task.verifier_metadata
        mode = meta.get("grading_mode", self.grading_mode)
        return verify_mcqa(answer, meta["expected_answer"], mode, meta.get("options"))
