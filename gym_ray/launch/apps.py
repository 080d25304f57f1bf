"""Serve application builders for config files (`serve run` / `serve deploy` / KubeRay RayService).

A Serve config names `import_path: gym_ray.launch.apps:policy_app` (or `env_app`) and passes `args:`;
the apps come up under the names `gym-ray collect` looks for (the model's name, the env's key).
"""

from __future__ import annotations

from ray.serve import Application

from gym_ray.config import EnvConfig, ModelConfig


def policy_app(args: dict) -> Application:
    """`args`: a `model:` block of a run config (kind, name, model, engine_kwargs, ...)."""
    from gym_ray.models.deploy import build_policy_app

    return build_policy_app(ModelConfig.model_validate(args))


def env_app(args: dict) -> Application:
    """`args`: `name` (the env's key) plus an `envs.<name>:` block of a run config (server, config, ...)."""
    from gym_ray.resources.serve import EnvDeployment, env_serve_options

    args = dict(args)
    name = args.pop("name")
    cfg = EnvConfig.model_validate(args)
    return EnvDeployment.options(**env_serve_options(name, cfg)).bind(name, cfg.model_dump())
