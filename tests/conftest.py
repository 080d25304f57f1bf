"""Shared fixtures: one local Ray cluster (and Serve) per test session, the default model, one embedded vLLM
policy for the end-to-end tests, free ports."""

from __future__ import annotations

import os

import pytest
import scheduling
from ports import free_port

# Local test clusters run without token auth; vLLM on CPU needs an explicit KV-cache size.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A private local Ray cluster for the whole session (ray.init costs ~10 s here), with Serve already up on
    a free port: an app deployed before Serve runs would start it on Serve's fixed 8000, which the other
    pytest-xdist worker's cluster may hold."""
    import ray
    from ray import serve

    for attempt in range(3):  # on a loaded machine the raylet can miss Ray's fixed 30 s registration wait
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
    for attempt in range(3):
        port = free_port()
        if _serve_up(serve, port) or attempt == 2:
            break
        serve.shutdown()  # another process took the port first, or the controller killed a slow proxy
    _serve_port[:] = [port]
    yield ray
    serve.shutdown()
    ray.shutdown()


_serve_port: list[int] = []


@pytest.fixture(scope="session")
def serve_http_port(ray_cluster) -> int:
    """The port Serve's HTTP proxy listens on (Serve's HTTP options are fixed at its first start)."""
    return _serve_port[0]


def _serve_up(serve, port: int, timeout_s: float = 120) -> bool:
    """Start Serve on `port` and wait for its proxy to be healthy: a free port can be taken by another process
    before the proxy binds it (the proxy then retries the same port forever)."""
    import time

    from ray.exceptions import RayActorError
    from ray.serve.schema import ProxyStatus

    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    except RayActorError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proxies = serve.status().proxies
        if proxies and all(s == ProxyStatus.HEALTHY for s in proxies.values()):
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="session")
def default_model_path() -> str:
    from gym_ray.models.default_model import prepare_default_model

    return str(prepare_default_model())


# The embedded vLLM policy as the end-to-end tests configure it: the default model, the agents' chat
# template, a 2,048-token window.
SHARED_VLLM = {"kind": "vllm", "name": "policy", "chat_template": "chatml_tools",
               "engine_kwargs": {"max_model_len": 2048}}
SHARED_VLLM_APP = "policy"  # the app `gym-ray run` deploys the default model as
_shared_vllm_up: list[str] = []  # the app's name while it is deployed


@pytest.fixture(scope="session")
def shared_vllm(serve_http_port, default_model_path) -> tuple[dict, str]:
    """(model config, Serve app name) of SHARED_VLLM, deployed once for the tests that only generate with it:
    an engine start costs 50-75 s here. Those tests run back to back and the app goes after the last of
    them (the two hooks below), so it holds its CPU and memory only while they run."""
    from gym_ray.agents.tokenizer import SHIPPED_TEMPLATES
    from gym_ray.config import ModelConfig
    from gym_ray.models.deploy import delete_policy, deploy_policy

    template = str(SHIPPED_TEMPLATES[SHARED_VLLM["chat_template"]])  # the engine opens it as a file
    deploy_policy(ModelConfig(**{**SHARED_VLLM, "chat_template": template}), SHARED_VLLM_APP,
                  route_prefix=f"/{SHARED_VLLM_APP}")  # its OpenAI endpoint too, as `gym-ray run` serves it
    _shared_vllm_up.append(SHARED_VLLM_APP)
    yield SHARED_VLLM, SHARED_VLLM_APP
    if _shared_vllm_up:
        delete_policy(_shared_vllm_up.pop())


def _on_shared_vllm(item) -> bool:
    return item is not None and "shared_vllm" in getattr(item, "fixturenames", ())


def pytest_configure(config):
    scheduling.configure(config)


def pytest_collection_modifyitems(config, items):
    """Module by module, longest first; the tests on `shared_vllm` are one unit, so they run back to back on
    one worker (tests/scheduling.py)."""
    scheduling.order(config, items, _on_shared_vllm)


def pytest_runtest_teardown(item, nextitem):
    """After the last test on `shared_vllm`, its app goes."""
    if _shared_vllm_up and _on_shared_vllm(item) and not _on_shared_vllm(nextitem):
        from gym_ray.models.deploy import delete_policy

        delete_policy(_shared_vllm_up.pop())
