"""Code: write a Python function; verify runs the task's unit tests in the bubblewrap sandbox."""

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import verify_code
from gym_ray.sandbox import Sandbox, SandboxLimits


class Code(ResourceServer):
    verifier = "the program's values in the bubblewrap sandbox, compared on the host"
    origin = "native"
    metric = "pass@k"

    def __init__(self, test_timeout_s: float = 4.0, max_concurrency: int = 4, limits: dict | None = None):
        # Built at start-up, so a machine without bubblewrap fails here, not on the first verify.
        self.sandbox = Sandbox(SandboxLimits(**(limits or {})), max_concurrency=max_concurrency)
        self.test_timeout_s = test_timeout_s

    async def score(self, task, answer):
        return await verify_code(
            answer, task.verifier_metadata, self.sandbox, test_timeout_s=self.test_timeout_s
        )
