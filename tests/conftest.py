"""Shared fixtures: one local Ray cluster (and Serve) per test session, the default model, free ports."""

from __future__ import annotations

import os

import pytest
from ports import free_port

# Local test clusters run without token auth; vLLM on CPU needs an explicit KV-cache size.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A private local Ray cluster for the whole session (ray.init costs ~10 s here)."""
    import ray

    for attempt in range(3):  # on a loaded machine the raylet can miss Ray's fixed 30 s registration wait
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_http_port(ray_cluster) -> int:
    """Serve started once on a free port (Serve's HTTP options are fixed at its first start)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def default_model_path() -> str:
    from gym_ray.models.default_model import prepare_default_model

    return str(prepare_default_model())
