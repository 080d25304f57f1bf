"""What `gym-ray env check NAME|PATH` checks: the run config, and the environment package it names, found
and imported without installing it.

A package folder (its pyproject.toml maps the folder to `gym_ray_env_<name>`) that is not installed is
imported from the folder itself, and the config's short `server: <name>` is read from the folder's own
entry point: a new environment can be checked before `pip install -e`.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import yaml

from gym_ray.config import ConfigError, RunConfig, load_config
from gym_ray.environments import GROUP, entry_points, shipped_configs
from gym_ray.tasks import TaskLoadError


class EnvCheckInputError(ValueError):
    """What to check cannot be found or read (exit 2); the message names the path or name."""


class PackageImportError(RuntimeError):
    """The package folder's own `__init__.py` raised: an environment error (exit 1), not bad input."""


def locate(target: str) -> Path:
    """The run config `target` stands for: a config file, a package folder (its config.yaml), an installed
    environment's shipped config, or `environments/<target>/config.yaml` under the current directory."""
    path = Path(target)
    if path.is_dir():
        path = path / "config.yaml"
        if not path.is_file():
            raise EnvCheckInputError(f"{target}: a folder without config.yaml (give the run config's path)")
        return path
    if path.is_file():
        return path
    if len(path.parts) > 1 or path.suffix:
        raise EnvCheckInputError(f"{target}: no such file or folder")
    shipped = shipped_configs()
    if target in shipped:
        return shipped[target]
    local = Path("environments") / target / "config.yaml"
    if local.is_file():
        return local
    raise EnvCheckInputError(f"{target}: no installed environment of that name and no environments/{target}/ "
                             f"here (installed: {', '.join(sorted(shipped))})")


def folder_entry_points(folder: Path) -> dict[str, str]:
    """The `gym_ray.environments` entry points of the package in `folder`, by name; the package is imported
    from the folder when it is not installed. None declared (no pyproject.toml): empty."""
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        meta = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EnvCheckInputError(f"{pyproject}: cannot read it: {e}") from None
    dirs = (meta.get("tool", {}).get("setuptools", {}).get("package-dir") or {})
    for package, where in dirs.items():
        if where in (".", "") and (folder / "__init__.py").is_file():
            try:
                _import_folder(package, folder)
            except Exception as e:  # the package's own code: the check reports it as the import's failure
                raise PackageImportError(f"{folder / '__init__.py'}: importing {package} failed: "
                                         f"{type(e).__name__}: {e}") from e
    return dict(meta.get("project", {}).get("entry-points", {}).get(GROUP, {}))


def _import_folder(package: str, folder: Path) -> None:
    if package in sys.modules or importlib.util.find_spec(package) is not None:
        return  # installed (an editable install maps the same folder)
    spec = importlib.util.spec_from_file_location(package, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[package]
        raise


def load_env_config(config: Path) -> RunConfig:
    """The run config, with each `server: <name>` that only the config's own (uninstalled) package folder
    registers read as that package's `module:Class`."""
    own = folder_entry_points(config.resolve().parent)
    installed = entry_points()
    overrides = []
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = {}  # load_config below names the problem
    envs = raw.get("envs") if isinstance(raw, dict) else None
    for name, env in (envs or {}).items() if isinstance(envs, dict) else ():
        server = env.get("server") if isinstance(env, dict) else None
        if isinstance(server, str) and server in own and server not in installed:
            overrides.append(f"envs.{name}.server={own[server]}")
    try:
        cfg = load_config(config, overrides)
    except (ConfigError, TaskLoadError) as e:
        raise EnvCheckInputError(str(e)) from None
    if not cfg.envs:
        raise EnvCheckInputError(f"{config}: the config names no envs")
    return cfg
