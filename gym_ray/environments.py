"""Environment packages by short name: the `gym_ray.environments` entry-point group.

An environment package (each folder of the repository's `environments/`, or any installed distribution)
registers its `ResourceServer` class under this group, so a config names it `server: weather` as well as
`module:Class`. A name resolves from the installed metadata alone: loading a config imports nothing.
"""

from __future__ import annotations

import re
from importlib import metadata, resources
from pathlib import Path

GROUP = "gym_ray.environments"
_OLD = "gym_ray.environments."  # where the environments lived before they became packages
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed environment packages' entry points, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def resolve_server(server: str) -> str:
    """`server:` as an import path: a short name becomes its entry point's `module:Class`; `module:Class`
    (and `verifiers:<id>`) pass through; a path into the old in-library folder is refused naming the new one."""
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
