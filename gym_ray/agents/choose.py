"""Which agent plays an environment: the one `agent.cls` names, else the one its server is written for.

A server that implements `reset` / `step` and offers no tools is played step by step (`EnvStepAgent`);
any other by the tool-calling loop. A named agent that cannot play the server (the tool loop on a server
with no tools but `reset` / `step`, the step agent on a server without them) is refused before the run.
"""

from __future__ import annotations

from gym_ray.config import EnvConfig
from gym_ray.importer import import_object
from gym_ray.resources.runtime import import_server
from gym_ray.resources.server import ResourceServer
from gym_ray.resources.tools import collect_tools

TOOL_AGENT = "gym_ray.agents.tool_calling:ToolCallingAgent"
STEP_AGENT = "gym_ray.agents.env_step:EnvStepAgent"


def _implements(server: type[ResourceServer], method: str) -> bool:
    return getattr(server, method) is not getattr(ResourceServer, method)


def step_driven(server: type[ResourceServer]) -> bool:
    """`reset` and `step` implemented, and no tools: no `@tool` and nothing forwarded."""
    return (_implements(server, "reset") and _implements(server, "step") and not collect_tools(server)
            and not _implements(server, "forward_tool"))


def _server(env: EnvConfig) -> type[ResourceServer] | None:
    """The env's server class; None where this process cannot import it (its package comes only with the
    replicas' `runtime_env`, or a cluster that `gym-ray collect` joins serves it)."""
    try:
        return import_server(env.server)
    except ValueError:
        return None


def agent_path(env: EnvConfig) -> str:
    """`agent.cls`, else the agent the server is written for (the tool-calling one for a server this process
    cannot import)."""
    if env.agent.cls:
        return env.agent.cls
    server = _server(env)
    return STEP_AGENT if server is not None and step_driven(server) else TOOL_AGENT


def agent_class(env: EnvConfig) -> type:
    return import_object(agent_path(env))


def check_agent(name: str, env: EnvConfig) -> None:
    """Refuse, in one line naming the env and the fix, a named agent that cannot play the env's server."""
    server = _server(env) if env.agent.cls else None
    if server is None:
        return
    from gym_ray.agents.env_step import EnvStepAgent
    from gym_ray.agents.tool_calling import ToolCallingAgent

    cls = import_object(env.agent.cls)
    if issubclass(cls, ToolCallingAgent) and step_driven(server):
        raise ValueError(f"env {name!r}: {server.__name__} is step-driven (reset/step, no tools) but agent.cls is "
                         f"the tool-calling agent; set agent.cls: {STEP_AGENT} or leave agent.cls out")
    if issubclass(cls, EnvStepAgent) and not (_implements(server, "reset") and _implements(server, "step")):
        raise ValueError(f"env {name!r}: agent.cls is the env-step agent but {server.__name__} implements no "
                         f"reset/step; set agent.cls: {TOOL_AGENT} or leave agent.cls out")
