"""Every private Ray / Serve / vLLM / verifiers name behind gym_ray.compat still exists in the installed
library, in the shape gym_ray uses it: a test per name, failing with the name. Names that exist only on a
running object (a started engine, a connected worker) are checked on the class that sets them."""

from __future__ import annotations

import asyncio
import dataclasses
import dis
import importlib
import importlib.metadata
import inspect
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from gym_ray import compat

ROOT = Path(__file__).resolve().parents[1]


def _get(path: str) -> Any:
    """`package.module.name` from the installed library; the test fails naming `path` when it is gone."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{path} is gone from the installed library ({type(e).__name__}: {e}); update gym_ray.compat")


def _sets(cls: type, attr: str) -> bool:
    """Whether a method of `cls` or of a base assigns `<obj>.<attr>` (an attribute only an instance has)."""
    for klass in cls.__mro__:
        for member in vars(klass).values():
            code = getattr(getattr(member, "__func__", member), "__code__", None)
            if code is not None and any(i.opname == "STORE_ATTR" and i.argval == attr
                                        for i in dis.get_instructions(code)):
                return True
    return False


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


# --- the version check -----------------------------------------------------------------------------------
def test_pins_are_the_projects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    install = (ROOT / "scripts" / "install.sh").read_text()
    specs += [re.search(rf"\b{name}==\S+", install).group() for name in ("verifiers", "inspect-ai")]
    pins = {}
    for spec in specs:
        if m := re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", spec):
            pins[m[1]] = m[2]
    assert {p: pins.get(p) for p in compat.PINNED} == compat.PINNED


def test_version_drift_names_the_package_and_both_versions():
    installed = {"ray": "2.61.0", "verifiers": compat.PINNED["verifiers"]}

    def version(package: str) -> str:
        if package not in installed:
            raise importlib.metadata.PackageNotFoundError(package)
        return installed[package]

    [line] = compat.version_drift(version)
    assert line.startswith(f"ray 2.61.0 is installed; gym_ray was checked against ray {compat.PINNED['ray']}")


def test_import_warns_once_per_drifted_package():
    code = ("import importlib.metadata as m, warnings\n"
            "real = m.version\n"
            "m.version = lambda p: '2.61.0' if p == 'ray' else real(p)\n"
            "warnings.simplefilter('always')\n"
            "import gym_ray.compat\n"
            "import gym_ray.compat\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stderr.count("CompatWarning: ray 2.61.0 is installed") == 1, out.stderr


# --- Ray ------------------------------------------------------------------------------------------------
def test_job_config_env_var():
    name = "ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR"
    assert _get(name) == compat.JOB_CONFIG_ENV, f"{name} is no longer {compat.JOB_CONFIG_ENV!r}"


def test_dashboard_address_chain():
    """ray.get_runtime_context().worker.node.address_info["webui_url"]: attributes of a connected worker."""
    from ray.runtime_context import RuntimeContext

    assert _sets(RuntimeContext, "worker"), "RuntimeContext.worker is gone"
    assert _sets(_get("ray._private.worker.Worker"), "node"), "ray._private.worker.Worker.node is gone"
    address_info = getattr(_get("ray._private.node.Node"), "address_info", None)
    assert isinstance(address_info, property), "ray._private.node.Node.address_info is gone"
    assert "webui_url" in inspect.getsource(address_info.fget), "Node.address_info no longer has 'webui_url'"


# --- Serve ----------------------------------------------------------------------------------------------
def test_grpc_message_limit_setting():
    name = f"ray.serve._private.constants.{compat.GRPC_LIMIT_ENV}"
    assert _get(name) == compat.grpc_message_limit(), f"{name} is not what gym_ray reads"
    source = inspect.getsource(importlib.import_module("ray.serve._private.constants"))
    assert f'"{compat.GRPC_LIMIT_ENV}"' in source, f"Serve no longer reads ${compat.GRPC_LIMIT_ENV}"


def test_handle_option_by_reference():
    from ray.serve.handle import DeploymentHandle

    assert "_by_reference" in _params(DeploymentHandle.options), "DeploymentHandle.options(_by_reference=) is gone"


def test_serve_global_client_http_config():
    get_client = _get("ray.serve.context._get_global_client")
    client_cls = _get("ray.serve._private.client.ServeControllerClient")
    assert callable(get_client)
    assert isinstance(getattr(client_cls, "http_config", None), property), "ServeControllerClient.http_config is gone"


def test_serve_client_delete_apps():
    client_cls = _get("ray.serve._private.client.ServeControllerClient")
    assert _params(getattr(client_cls, "delete_apps", None) or pytest.fail(
        "ServeControllerClient.delete_apps is gone"))[1:3] == ["names", "blocking"], \
        "ServeControllerClient.delete_apps(names, blocking) changed"


def test_consistent_hash_router():
    from ray.serve.request_router import RequestRouter

    router = _get("ray.serve.experimental.consistent_hash_router.ConsistentHashRouter")
    assert compat.consistent_hash_router() is router and issubclass(router, RequestRouter)


def test_routing_context_should_backoff():
    from ray.serve.request_router import PendingRequest

    context = typing.get_type_hints(PendingRequest)["routing_context"]
    fields = {f.name: f for f in dataclasses.fields(context)}
    assert "should_backoff" in fields, f"{context.__qualname__}.should_backoff is gone"
    request = type("Request", (), {"routing_context": context()})()
    compat.wait_for_replica(request)
    assert request.routing_context.should_backoff is True


# --- serve.llm and vLLM (importing them imports vLLM) -------------------------------------------------------
def test_llm_deployment_name():
    from ray.serve.llm import LLMConfig

    name_of = _get("ray.llm._internal.serve.core.server.builder._get_deployment_name")
    config = LLMConfig(model_loading_config={"model_id": "org/m.v1"})
    assert compat.llm_deployment_name("GymLLMServer", "org/m.v1") == f"GymLLMServer:{name_of(config)}"


def test_llm_server_engine_client():
    from ray.serve.llm.deployment import LLMServer

    engine_cls = _get("ray.llm._internal.serve.engines.vllm.vllm_engine.VLLMEngine")
    assert _sets(LLMServer, "engine"), "LLMServer.engine is gone"
    assert _sets(engine_cls, "_engine_client"), "VLLMEngine._engine_client is gone"


# --- verifiers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), [("_pull_state", ["self"]), ("_push_state", ["self", "before"])])
def test_toolset_state_channel(name, params):
    import verifiers.v1 as vf

    method = getattr(vf.Toolset, name, None)
    assert method is not None, f"verifiers Toolset.{name} is gone"
    assert _params(method) == params, f"verifiers Toolset.{name} now takes {_params(method)}"


def test_toolset_exit_stack():
    import verifiers.v1 as vf

    toolset = vf.Toolset(vf.ToolsetConfig())
    assert hasattr(toolset, "_exit_stack"), "verifiers Toolset._exit_stack is gone"
    closed = []
    toolset._exit_stack.callback(closed.append, "setup's resource")
    asyncio.run(compat.release_toolset(toolset))
    assert closed == ["setup's resource"]


def test_agent_config_fields():
    import verifiers.v1 as vf

    _get("verifiers.v1.configs.agent.agent_config_fields")

    class OneSeat(vf.EnvConfig):
        player: vf.AgentConfig = vf.AgentConfig()

    assert compat.agent_seats(OneSeat()) == ["player"]


def test_state_cls():
    import verifiers.v1 as vf

    _get("verifiers.v1.state.state_cls")
    assert issubclass(compat.state_class(vf.Toolset), vf.State)


def test_prepare_turn():
    import verifiers.v1 as vf

    _get("verifiers.v1.graph.prepare_turn")
    trace = vf.Trace(task=vf.TraceTask(type="T", data=vf.TaskData(prompt="hi"), key="k", hash="h"),
                     agent=vf.AgentInfo(config=vf.AgentConfig(), name="player"), state=vf.State())
    compat.prepare_turn(trace, [vf.UserMessage(content="hi")]).commit_prompt()
    assert len(trace.nodes) == 1


def test_content_text():
    _get("verifiers.v1.types.content_text")
    assert compat.content_text("hi") == "hi"


def test_inspect_sample_context():
    """Inspect's per-sample context setters, in the shape compat calls them."""
    assert _params(_get("inspect_ai.solver._task_state.set_sample_state"))[0] == "state"
    assert _params(_get("inspect_ai.util._store.init_subtask_store")) == ["store"]


def test_inspect_handoff_and_grader():
    from inspect_ai.tool import Tool  # noqa: F401  (the type has_handoff reads)

    assert _get("inspect_ai.agent._handoff.has_handoff")([]) is False
    assert _params(_get("inspect_ai.model._model.init_active_model"))[:2] == ["model", "config"]
    assert _params(_get("inspect_ai.model._model.init_model_roles")) == ["roles"]


@pytest.mark.parametrize("cls", ["scienceworld.ScienceWorldEnv", "textworld_express.TextWorldExpressEnv"])
def test_java_simulator_gateway(cls):
    """The simulators keep their py4j gateway as `_gateway`, whose `java_process` compat waits for."""
    assert _sets(_get(cls), "_gateway"), f"{cls} no longer sets _gateway"
    assert _sets(_get("py4j.java_gateway.JavaGateway"), "java_process")
