"""An environment client for wherever the environment is hosted: in-process or on Ray Serve."""

from __future__ import annotations

from gym_ray.clients import EnvClient
from gym_ray.config import EnvConfig


def make_env_client(name: str, cfg: EnvConfig, app_name: str | None = None) -> EnvClient:
    """A client for environment `name`: through its Serve app if `app_name` is given, else in-process.

    `app_name` is what `deploy_env` returned. Both clients are picklable and usable inside Ray actors.
    """
    if app_name is None:
        from gym_ray.resources.local import LocalEnvClient

        return LocalEnvClient(name, cfg)
    from gym_ray.resources.serve import HandleEnvClient, is_sticky

    return HandleEnvClient(app_name, sticky=is_sticky(cfg))
