"""deploy/ checked without a cluster: the KubeRay manifests against the RayJob /
RayService schema kept in deploy/kuberay/schema/ (KubeRay's v1 CRD is not on PyPI; the schema holds the
fields gym_ray uses, typed as the CRD types them, and refuses unknown ones); the Serve configs with Serve's
own `ServeDeploySchema`; the RayJob entrypoint with gym-ray's argparse and config loader; the Grafana
dashboard's queries against the metrics the agent actors export."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"


def manifest(name: str) -> dict:
    return yaml.safe_load((KUBERAY / f"{name}.yaml").read_text())


def schema(name: str) -> dict:
    return json.loads((KUBERAY / "schema" / f"{name}.schema.json").read_text())


@pytest.mark.parametrize("name", ["rayjob", "rayservice"])
def test_kuberay_manifest_matches_the_crd_schema(name):
    jsonschema.Draft7Validator(schema(name)).validate(manifest(name))


@pytest.mark.parametrize("path, value", [
    (("spec", "shutdownAfterJobFinish"), True),                                          # a misspelt field
    (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"), 0),      # not a string
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "replicas"), "2"),                # not an integer
])
def test_the_schema_refuses_what_kuberay_would(path, value):
    """The schema is not vacuous: a typo or a mistyped value in the RayJob is caught."""
    bad = copy.deepcopy(manifest("rayjob"))
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema("rayjob")).validate(bad)


def test_serve_configs_validate_with_serves_schema():
    from ray.serve.schema import ServeDeploySchema

    embedded = yaml.safe_load(manifest("rayservice")["spec"]["serveConfigV2"])
    standalone = [yaml.safe_load((ROOT / "deploy" / f).read_text())
                  for f in ("serve_config.yaml", "serve_config_scripted.yaml")]
    for cfg in (embedded, *standalone):
        parsed = ServeDeploySchema.model_validate(cfg) if hasattr(ServeDeploySchema, "model_validate") \
            else ServeDeploySchema.parse_obj(cfg)
        assert {a.name for a in parsed.applications} >= {"policy", "weather"}
        assert all(a.import_path.startswith("gym_ray.launch.apps:") for a in parsed.applications)


def test_rayjob_entrypoint_parses_with_the_cli_and_its_config_loads():
    from gym_ray.cli import parse_args
    from gym_ray.config import load_config

    job = manifest("rayjob")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[0] == "gym-ray"
    args = parse_args(argv[1:])
    assert args.command == "run" and args.func.__name__ == "_run"
    cfg = load_config(str(ROOT / args.config), args.overrides)  # the image's workingDir is the repo root (/app)
    assert cfg.collect.output_dir.startswith("/data/")  # on the PVC every pod mounts
    assert cfg.collect.num_agents >= 2
    env = yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]
    assert all(isinstance(v, str) for v in env.values())


def test_grafana_dashboard_queries_exported_metrics(monkeypatch):
    """Every `ray_gym_ray_*` series a panel queries is one CollectTelemetry registers (Ray's exporter adds
    the `ray_` prefix and Prometheus' `_total` / `_bucket` / `_sum` / `_count` suffixes)."""
    import ray.util.metrics

    from gym_ray.collect.telemetry import CollectTelemetry

    registered: dict[str, str] = {}

    def recorder(kind):
        def make(name, description="", tag_keys=(), **kw):
            registered[name] = kind
            return type("M", (), {"inc": lambda *a, **k: None, "set": lambda *a, **k: None,
                                  "observe": lambda *a, **k: None})()
        return make

    for kind in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(ray.util.metrics, kind, recorder(kind))
    CollectTelemetry("a")
    suffixes = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
    exported = {f"ray_{n}{s}" for n, kind in registered.items() for s in suffixes[kind]}

    dash = json.loads((ROOT / "deploy" / "grafana" / "gym_ray_dashboard.json").read_text())
    queried = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"ray_gym_ray_\w+", t["expr"])}
    assert queried and queried <= exported, sorted(queried - exported)
    assert {f"ray_{n}" + suffixes[k][0] for n, k in registered.items()} <= queried  # every metric has a panel
