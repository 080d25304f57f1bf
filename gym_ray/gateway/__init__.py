"""A token-capturing OpenAI gateway: black-box agent programs call it like any OpenAI endpoint, and every
call lands token-exactly in the episode's transcript (see `session.py` for how, `server.py` for where,
`agent.py` for the agent kind that runs a program against it)."""

from gym_ray.gateway.server import Gateway, get_gateway
from gym_ray.gateway.session import GatewayError, GatewaySession

__all__ = ["Gateway", "GatewayError", "GatewaySession", "get_gateway"]
