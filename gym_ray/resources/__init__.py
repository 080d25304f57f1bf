"""Resource servers: environments with tools, per-episode sessions and a verifier.

This package's namespace is the environment author's (see README.md in this folder), also reachable as
`from gym_ray import ...`. Hosting lives in its own modules: `gym_ray.resources.client.make_env_client`
(in-process or through Serve), `gym_ray.resources.serve.deploy_env`, `gym_ray.resources.runtime.EnvRuntime`,
`gym_ray.resources.pool.ProcessPool`.
"""

from gym_ray.resources.messages import extract_tag, final_answer, tool_results
from gym_ray.resources.pool import run_in_process
from gym_ray.resources.runtime import EnvError
from gym_ray.resources.server import ResourceServer
from gym_ray.resources.tools import tool
from gym_ray.types import Message, StepResult, Task, ToolCall, VerifyResult

__all__ = [
    "EnvError",
    "Message",
    "ResourceServer",
    "StepResult",
    "Task",
    "ToolCall",
    "VerifyResult",
    "extract_tag",
    "final_answer",
    "run_in_process",
    "tool",
    "tool_results",
]
