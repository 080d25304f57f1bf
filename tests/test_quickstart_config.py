"""The quickstart's config loads as `make demo` runs it, and mixes in the environment a 135M model scores on."""

from pathlib import Path

from gym_ray.collect.api import load_run_tasks
from gym_ray.config import load_config

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def test_quickstart_loads_with_a_learnable_environment():
    cfg = load_config(QUICKSTART)
    assert set(cfg.envs) == {"weather", "math", "mcqa", "blackjack", "one_word"}
    assert all(env.hosting == "local" for env in cfg.envs.values())
    tasks = load_run_tasks(cfg)
    assert sorted({t.env for t in tasks}) == sorted(cfg.envs) and len(tasks) == 2 * len(cfg.envs)
