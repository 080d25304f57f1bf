"""Environments by short name: the `gym_ray.environments` and `gym_ray.adapters` entry-point groups.

An environment package (each folder of the repository's `environments/`, or any installed distribution)
registers its `ResourceServer` class under `gym_ray.environments`, so a config names it `server: weather`
as well as `module:Class`; such a name resolves from the installed metadata alone. An adapter (a server
class that runs another library's environments by their own names) registers under `gym_ray.adapters`, so
`server: <adapter>:<name>` runs that library's environment `<name>`: the class gets `<name>` as its first
constructor argument. The core names no adapter: gym_ray's own are entry points of its pyproject.toml.
"""

from __future__ import annotations

import inspect
import re
from importlib import metadata, resources
from pathlib import Path
from typing import Any

GROUP = "gym_ray.environments"
ADAPTERS = "gym_ray.adapters"
_OLD = "gym_ray.environments."  # where the environments lived before they became packages
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed environment packages' entry points, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def adapter_server(server: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """`<adapter>:<name>` as the adapter's `module:Class` and its config with `<name>` as the class's first
    constructor argument (the adapter class is imported to learn that argument's name); None when
    `server` names no installed adapter."""
    adapter, sep, name = server.partition(":")
    if not sep or "." in adapter:
        return None
    found = {ep.name: ep for ep in metadata.entry_points(group=ADAPTERS)}
    if adapter not in found:
        return None
    if not name.strip():
        raise ValueError(f"server '{adapter}:' names no environment (give {adapter}:<name>)")
    params = [p for p in inspect.signature(found[adapter].load()).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        raise ValueError(f"server {server!r}: adapter {found[adapter].value} takes no name to run")
    return found[adapter].value, {params[0].name: name.strip(), **config}


def resolve_server(server: str) -> str:
    """`server:` as an import path: a short name becomes its entry point's `module:Class`; `module:Class`
    passes through; a path into the old in-library folder is refused naming the new one."""
    if server.startswith(_OLD):
        name, _, rest = server.removeprefix(_OLD).partition(".")
        raise ValueError(f"server {server!r}: environments are packages now: use '{name}' "
                         f"(or 'gym_ray_env_{name}.{rest}')")
    if not _NAME.fullmatch(server) or "." in server:
        return server
    found = entry_points()
    if server not in found:
        names = ", ".join(sorted(found)) or "none"
        raise ValueError(f"server {server!r}: no installed environment package registers that name under "
                         f"{GROUP!r} (installed: {names}); pip install its package, or give module:Class")
    return found[server].value


def shipped_configs() -> dict[str, Path]:
    """Each installed environment package's own `config.yaml` (its one-line run config), by name."""
    out = {}
    for name, ep in sorted(entry_points().items()):
        config = resources.files(ep.module.split(".")[0]) / "config.yaml"
        if config.is_file():
            out[name] = Path(str(config))
    return out
