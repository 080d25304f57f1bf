"""Policy models: hosting (vLLM on Serve, scripted), external endpoints, and the `PolicyClient` factory.

Names are imported lazily so that importing `gym_ray.models` does not import Ray Serve.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "deploy_policy": "gym_ray.models.deploy",
    "delete_policy": "gym_ray.models.deploy",
    "PolicyEndpoint": "gym_ray.models.deploy",
    "make_policy_client": "gym_ray.models.client",
    "HandlePolicyClient": "gym_ray.models.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gym_ray.models' has no attribute {name!r}")
