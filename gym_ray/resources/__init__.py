"""Resource servers: environments with tools, per-episode sessions and a verifier.

Write an environment by subclassing `ResourceServer` (see README.md in this folder); host it
in-process or on Ray Serve with `make_env_client` / `deploy_env`.
"""

from gym_ray.resources.client import make_env_client
from gym_ray.resources.messages import extract_tag, final_answer, tool_results
from gym_ray.resources.pool import ProcessPool, ProcessTimeout, run_in_process
from gym_ray.resources.runtime import EnvError, EnvRuntime
from gym_ray.resources.server import ResourceServer
from gym_ray.resources.tools import tool
from gym_ray.types import Message, StepResult, Task, VerifyResult

__all__ = [
    "EnvError",
    "EnvRuntime",
    "Message",
    "ProcessPool",
    "ProcessTimeout",
    "ResourceServer",
    "StepResult",
    "Task",
    "VerifyResult",
    "deploy_env",
    "extract_tag",
    "final_answer",
    "make_env_client",
    "run_in_process",
    "tool",
    "tool_results",
]


def __getattr__(name: str):
    # Importing Ray Serve is slow; only callers that deploy pay for it.
    if name == "deploy_env":
        from gym_ray.resources.serve import deploy_env

        return deploy_env
    raise AttributeError(name)
