"""The gym-ray distribution installs one top-level package, so it can share an interpreter with nemo-gym
(`environments`), verl and openrlhf (`tests`); each environment is a package of its own, and a config naming
an environment by its old in-library path is told the new name."""

import tomllib
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

from gym_ray.config import ConfigError, EnvConfig, validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_only_gym_ray_is_a_top_level_package():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_namespace_packages(str(ROOT), include=find["include"])
    assert "gym_ray.resources" in packages
    assert {p.split(".")[0] for p in packages} == {"gym_ray"}


@pytest.mark.parametrize("name", sorted(p.parent.name for p in (ROOT / "environments").glob("*/pyproject.toml")))
def test_each_environment_is_a_distribution_of_its_own_package(name):
    project = tomllib.loads((ROOT / "environments" / name / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    assert len(packages) == 1 and packages[0].startswith("gym_ray_"), packages
    assert project["project"]["name"].startswith("gym-ray-")


def test_old_environment_path_names_the_new_one():
    with pytest.raises(ConfigError) as e:
        validate_config({"envs": {"w": {"server": "gym_ray.environments.weather.server:Weather"}}}, "run.yaml")
    assert str(e.value).count("\n") == 0
    assert "envs.w.server" in str(e.value) and "use 'weather' (or 'gym_ray_env_weather.server:Weather')" in str(e.value)
    assert EnvConfig(server="weather").server == "gym_ray_env_weather.server:Weather"
