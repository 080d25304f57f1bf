"""The distribution installs one top-level package, so it can share an interpreter with nemo-gym
(`environments`), verl and openrlhf (`tests`)."""

import tomllib
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

from gym_ray.resources.runtime import import_server

ROOT = Path(__file__).resolve().parents[1]


def test_only_gym_ray_is_a_top_level_package():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_namespace_packages(str(ROOT), include=find["include"])
    assert "gym_ray.environments.weather" in packages
    assert {p.split(".")[0] for p in packages} == {"gym_ray"}


def test_old_environment_path_names_the_new_one():
    with pytest.raises(ValueError, match=r"use 'gym_ray\.environments\.weather\.server:Weather'"):
        import_server("environments.weather.server:Weather")
    assert import_server("gym_ray.environments.weather.server:Weather").__name__ == "Weather"
