"""Build every part of a run once in the driver, before anything slow starts.

A part that cannot be built inside the agent actors (`hosting: local` envs, a local scripted policy)
would otherwise fail every episode: 100% env_error / model_error rows and exit 0. Here it fails in
seconds, as one line naming the config file, the part's key and the cause. Serve-hosted parts are only
imported (their replicas build them; `deploy_env` / `deploy_policy` surface a replica's own exception),
and not even that when their package comes with the replicas' `runtime_env`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gym_ray.config import ConfigError, ModelConfig, RunConfig


def check_parts(cfg: RunConfig, source: str, *, hosted: bool = True) -> None:
    """Import every env's server and agent class and check the agent's options (`agent.kwargs`) and that it
    can play the server; build `hosting: local` envs with their `config:` and local scripted policies'
    scripts. `hosted=False` skips the server classes of Serve-hosted envs (they already run elsewhere:
    `gym-ray collect`)."""
    from gym_ray.agents.base import agent_options
    from gym_ray.agents.choose import agent_class, check_agent
    from gym_ray.resources.runtime import EnvRuntime, import_server

    for name, env in cfg.envs.items():
        if (hosted and not env.runtime_env) or env.hosting == "local":  # runtime_env: the replicas import it
            _build(source, f"envs.{name}.server", lambda env=env: import_server(env.server))
        if env.hosting == "local":
            _build(source, f"envs.{name}.config", lambda name=name, env=env: EnvRuntime.from_config(name, env))
        agent = _build(source, f"envs.{name}.agent.cls", lambda env=env: agent_class(env))
        _build(source, f"envs.{name}.agent.kwargs", lambda a=agent, env=env: agent_options(a, env.agent.kwargs))
        _build(source, f"envs.{name}.agent.cls", lambda name=name, env=env: check_agent(name, env))
    models = {"model": cfg.model, **{f"models.{k}": m for k, m in cfg.models.items()}}
    for key, m in models.items():
        if m.kind == "scripted" and m.hosting == "local":
            _script(source, key, m)


def _script(source: str, key: str, m: ModelConfig) -> None:
    from gym_ray.models.scripted import load_script, reply_text

    if m.script:
        _build(source, f"{key}.script", lambda: load_script(m.script))
    for i, r in enumerate(m.replies):
        _build(source, f"{key}.replies[{i}]", lambda i=i, r=r: reply_text(r, f"{key}.replies[{i}]"))


def _build(source: str, key: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except Exception as e:  # whatever a user's constructor raises, it is the cause to report
        text = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        text = " ".join(text.split()).removeprefix(f"{key}: ").removeprefix("model.script: ")  # already said
        raise ConfigError(f"{source}: {key}: {text}") from None
