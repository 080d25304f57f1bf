"""Run configuration: OmegaConf YAML (includes, interpolation, dotlist overrides) validated by pydantic.

One file describes a whole run. `includes:` lists other YAML files (relative to the including file)
merged underneath it, so a file only states what differs. Errors name the key path and the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from gym_ray.environments import adapter_server, resolve_server


class ConfigError(ValueError):
    """A configuration problem; the message names the key path, the file and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(_Strict):
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = -1
    max_tokens: int = Field(256, gt=0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class AutoscalingConfig(_Strict):
    """Serve's autoscaler (`autoscaling_config`); the delays are Serve's defaults."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 16
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)


class ModelConfig(_Strict):
    """A policy (or judge) model: one model per `kind`, so a key of another kind is an error naming it.

    `ModelConfig(...)` and `ModelConfig.model_validate(...)` build the kind's own model (`VllmModelConfig`,
    `OpenAIModelConfig`, `ScriptedModelConfig`); `model: null` means the embedded default
    (SmolLM2-135M-Instruct).
    """

    kind: str
    name: str = "policy"
    model: str | None = None
    chat_template: str | None = None
    # where the Hugging Face tokenizer is loaded from (default: `model` when hosted, else the embedded default)
    tokenizer: str | None = None

    def __new__(cls, *args: Any, **data: Any) -> ModelConfig:
        if cls is ModelConfig:  # the kind picks the class; Python then runs that class's __init__ on `data`
            return _MODEL_KINDS[_kind_of(data)].__new__(_MODEL_KINDS[_kind_of(data)])
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> ModelConfig:
        if cls is ModelConfig:
            return _ANY_MODEL.validate_python(obj, **kwargs)
        return super().model_validate(obj, **kwargs)


class _Served(ModelConfig):
    """A model gym_ray hosts on Serve."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingConfig | None = None
    max_ongoing_requests: int = 256
    # Serve handle transport for generate: "grpc" (_by_reference=False) or Ray's "default". On a quiet
    # 2-core machine gRPC gave 1.4-1.6x the rollouts/s of the default (benchmarks/orchestration.py)
    handle_transport: Literal["default", "grpc"] = "grpc"


class VllmModelConfig(_Served):
    """vLLM on Serve (ray.serve.llm); `model: null` is the embedded default."""

    kind: Literal["vllm"] = "vllm"
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    kv_cache_gib: int = Field(1, ge=1)  # VLLM_CPU_KVCACHE_SPACE takes whole GiB
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"  # auto: GPU defaults when the cluster has GPUs


class OpenAIModelConfig(ModelConfig):
    """An OpenAI-compatible endpoint gym_ray does not host."""

    kind: Literal["openai"] = "openai"
    base_url: str
    api_key_env: str | None = None
    max_concurrency: int = 64
    timeout_s: float = 120.0
    max_retries: int = 4


class ScriptedModelConfig(_Served):
    """Replies from a script or a list, for tests and load tests of environments."""

    kind: Literal["scripted"] = "scripted"
    script: str | None = None
    replies: list[Any] = Field(default_factory=list)
    # "serve" (a Serve app: HTTP, replicas, hooks) or "local" (the script runs inside each caller, no hop
    # per call: for load-testing environments)
    hosting: Literal["serve", "local"] = "serve"
    # sample replies at this rate, one token at a time (a latency model: a weight update can cut a reply)
    tokens_per_second: float | None = Field(None, gt=0)


_MODEL_KINDS: dict[str, type[ModelConfig]] = {
    "vllm": VllmModelConfig, "openai": OpenAIModelConfig, "scripted": ScriptedModelConfig}


def _kind_of(data: Any) -> str:
    """The kind a model's keys name (`vllm` when they name none); an unknown kind fails as a bad `kind`."""
    kind = data.get("kind", "vllm") if isinstance(data, dict) else getattr(data, "kind", None)
    if kind not in _MODEL_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(_MODEL_KINDS)}")
    return kind


def _tag(data: Any) -> str | None:
    try:
        return _kind_of(data)
    except ValueError:
        return None


AnyModelConfig = Annotated[
    Annotated[VllmModelConfig, Tag("vllm")] | Annotated[OpenAIModelConfig, Tag("openai")]
    | Annotated[ScriptedModelConfig, Tag("scripted")],
    Discriminator(_tag, custom_error_type="model_kind",
                  custom_error_message=f"kind must be one of {', '.join(_MODEL_KINDS)}"),
]
_ANY_MODEL: TypeAdapter[ModelConfig] = TypeAdapter(AnyModelConfig)


class AgentConfig(_Strict):
    """Which agent drives an environment's episodes and its options.

    `cls` is an import path `module:Class`; left out, the server picks (gym_ray.agents.choose): the env-step
    agent for a server with `reset` / `step` and no tools, else the tool-calling agent. `kwargs` are the
    agent class's own options, checked against its `Options` model before the run (an unknown key fails).
    """

    cls: str | None = None
    max_turns: int = Field(8, gt=0)
    max_total_tokens: int = Field(2048, gt=0)
    tool_parser: str = "hermes"
    # A longer tool result or observation is cut (the model is told): a 10 MB output would otherwise be
    # tokenized whole, stall other episodes and land whole in the row.
    max_tool_output_chars: int = Field(16384, gt=0)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class EnvConfig(_Strict):
    """One environment (resource server): its class (`module:Class`, or the short name an installed
    environment package registers), data, settings and how it is hosted."""

    server: str
    data: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    num_replicas: int = 1
    # Serve's autoscaler (replaces num_replicas); sessions stick to replicas as with num_replicas > 1
    autoscaling: AutoscalingConfig | None = None
    route_prefix: str | None = None
    max_ongoing_requests: int = 1024
    weight: float = 1.0
    # "serve": a Serve app shared by all agent actors; "local": an instance inside each agent actor
    # (no hop per call; right for pure-Python envs whose state lives in the episode's session)
    hosting: Literal["serve", "local"] = "serve"
    # Ray's runtime_env for the env's Serve replicas: how a cluster gets an environment package the driver
    # does not have (`pip` from an index; `py_modules` / `working_dir` as URIs). The driver does not import
    # such a server: name it `module:Class`.
    runtime_env: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _adapter_by_name(cls, data: Any) -> Any:
        """`server: <adapter>:<name>` runs another library's environment through an installed adapter
        (gym_ray.environments)."""
        server = data.get("server") if isinstance(data, dict) else None
        if isinstance(server, str) and (found := adapter_server(server, data.get("config") or {})):
            data = {**data, "server": found[0], "config": found[1]}
        return data

    @field_validator("server")
    @classmethod
    def _server_by_name(cls, server: str) -> str:
        """`server: <name>` names an installed environment package (gym_ray.environments)."""
        return resolve_server(server)

    @field_validator("runtime_env")
    @classmethod
    def _runtime_env_uris(cls, runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
        """Serve uploads nothing for a deployment (Ray does that only for a job): code comes as URIs."""
        modules = (runtime_env or {}).get("py_modules") or []
        for key, value in [("working_dir", (runtime_env or {}).get("working_dir")),
                           *((f"py_modules[{i}]", m) for i, m in enumerate(modules))]:
            if isinstance(value, str) and "://" not in value:
                raise ValueError(f"runtime_env.{key}: {value!r} is a local path; a Serve replica takes a URI "
                                 "(local:///dir present on every node, s3://, gs://, https://...zip) or pip")
        return runtime_env

    @model_validator(mode="after")
    def _runtime_env_on_serve(self) -> EnvConfig:
        if self.runtime_env and self.hosting != "serve":
            raise ValueError("runtime_env applies to the Serve replicas: it needs hosting: serve")
        return self


class TreeConfig(_Strict):
    """Tree rollouts: each rollout of a group is a tree. An episode branches at its first `depth` branch points
    into `width` continuations each (forked env session, copied transcript), so a tree has up to
    width^depth leaves, each verified into a row. `at`: `assistant_turn` (before every model call after the
    first), `tool_call` (before a model call that follows tool results) or `token_entropy` (in hindsight:
    each node plays to its end, then branches before its model call whose sampled tokens were least likely,
    by their logprobs)."""

    width: int = Field(2, ge=2)
    depth: int = Field(1, ge=1)
    at: Literal["assistant_turn", "tool_call", "token_entropy"] = "assistant_turn"

    @property
    def leaves(self) -> int:
        return self.width**self.depth


class _Monitor(_Strict):
    """One online monitor (gym_ray.monitors): a rate over the last `window` finished groups, judged once
    `min_groups` have finished; `on_alert: stop` ends the run cleanly when it fires."""

    on_alert: Literal["warn", "stop"] = "warn"
    window: int = Field(16, gt=0)
    min_groups: int = Field(4, gt=0)


class ZeroVarianceMonitor(_Monitor):
    share: float = Field(0.5, ge=0, le=1)  # of groups whose rollouts all got the same reward


class ModeCollapseMonitor(_Monitor):
    share: float = Field(0.5, ge=0, le=1)  # of groups (2+ finished rollouts) whose outputs are all identical


class GraderAddressingMonitor(_Monitor):
    share: float = Field(0.05, ge=0, le=1)  # of finished episodes that name the grader and score >= min_reward
    min_reward: float = 1.0
    patterns: list[str] = Field(default_factory=list)  # more regular expressions (case-insensitive)


class ToolLoopMonitor(_Monitor):
    share: float = Field(0.1, ge=0, le=1)  # of episodes that make one call (name and arguments) `repeats` times
    repeats: int = Field(4, ge=2)


class LengthMonitor(_Monitor):
    """The window's mean response length against the mean of every group before the window."""

    collapse: float = Field(0.25, gt=0, lt=1)  # alert below this fraction of the baseline
    explode: float = Field(4.0, gt=1)  # alert above this multiple of the baseline


class CrossCheckMonitor(_Monitor):
    """A second verifier (a `ResourceServer`: another env's, a corrected one, an LLM judge's) re-scores a
    sample of finished episodes in the driver; alert when their pass/fail verdicts disagree on at least
    `disagreement` of the window's samples and on `rise` more than over the first `min_groups` groups."""

    server: str
    config: dict[str, Any] = Field(default_factory=dict)
    sample: float = Field(0.25, gt=0, le=1)
    pass_threshold: float = 1.0
    disagreement: float = Field(0.2, ge=0, le=1)
    rise: float = Field(0.1, ge=0, le=1)

    @field_validator("server")
    @classmethod
    def _server_by_name(cls, server: str) -> str:
        return resolve_server(server)


class MonitorsConfig(_Strict):
    """`collect.monitors`: the detectors to run on finished groups (each off unless named, `{}` for its
    defaults)."""

    zero_variance: ZeroVarianceMonitor | None = None
    mode_collapse: ModeCollapseMonitor | None = None
    grader_addressing: GraderAddressingMonitor | None = None
    tool_loop: ToolLoopMonitor | None = None
    length: LengthMonitor | None = None
    cross_check: CrossCheckMonitor | None = None

    @property
    def enabled(self) -> dict[str, _Monitor]:
        return {name: m for name in type(self).model_fields if (m := getattr(self, name)) is not None}


class CollectConfig(_Strict):
    output_dir: str = "runs/latest"
    num_repeats: int = Field(1, gt=0)
    limit: int | None = None
    concurrency: int = Field(32, gt=0)
    num_agents: int = Field(1, gt=0)
    episode_timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(2, ge=0)
    rows_per_file: int = Field(512, gt=0)
    roll_seconds: float = Field(30.0, gt=0)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    resume: bool = False
    tree: TreeConfig | None = None
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    # what a weight update does to generations in flight (gym_ray.models.updates): finish them under the
    # old weights, abort them and continue under the new ones, or drop their episodes
    weight_update: Literal["finish", "abort", "drop"] = "finish"
    # a group with a dropped episode: kept with its masked row, or run again (a rollout stream)
    on_dropped: Literal["mask", "rerun"] = "mask"


# Deployments on the rollout hot path skip Serve's per-request access log: thousands of calls a second
# would otherwise spend CPU formatting and writing log lines nobody reads.
HOT_PATH_LOGGING = {"enable_access_log": False}


class RayConfig(_Strict):
    address: str | None = None
    num_cpus: int | None = None
    namespace: str = "gym_ray"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    env_vars: dict[str, str] = Field(default_factory=dict)


class RunConfig(_Strict):
    """Everything one `gym-ray run` needs."""

    model: AnyModelConfig = Field(default_factory=VllmModelConfig)
    models: dict[str, AnyModelConfig] = Field(default_factory=dict)
    envs: dict[str, EnvConfig] = Field(default_factory=dict)
    collect: CollectConfig = Field(default_factory=CollectConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(str(p) for p in seen)}")
    if not path.is_file():
        where = f" (included from {seen[-1]})" if seen else ""
        raise ConfigError(f"{path}: config file not found{where}")
    cfg = _parse_yaml(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level, got a list")
    includes = cfg.pop("includes", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, ListConfig | list):
        raise ConfigError(f"{path}: includes: expected a list of file paths")
    base = OmegaConf.create({})
    for inc in includes:
        base = OmegaConf.merge(base, _load_yaml(path.parent / str(inc), (*seen, path)))
    merged = OmegaConf.merge(base, cfg)
    _make_paths_absolute(merged, path.parent)
    return merged


def _parse_yaml(path: Path) -> DictConfig | ListConfig:
    """The file's YAML; a bad byte or a syntax error is one line naming the file and the line (a BOM is fine)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
    try:
        return OmegaConf.load(io.StringIO(text))
    except yaml.MarkedYAMLError as e:
        mark, where = e.problem_mark, ""
        if e.context and e.context_mark is not None:
            where = f" ({e.context} at line {e.context_mark.line + 1})"
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {line}not valid YAML: {e.problem}{where}") from None
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def _make_paths_absolute(cfg: DictConfig, root: Path) -> None:
    """Env data paths are written relative to the YAML that names them; pin them before merging further."""
    envs = cfg.get("envs")
    if not isinstance(envs, DictConfig):
        return
    for env in envs.values():
        if isinstance(env, DictConfig) and "data" in env and env.data is not None:
            data = [env.data] if isinstance(env.data, str) else list(env.data)
            env.data = [str(p) if Path(str(p)).is_absolute() else str((root / str(p)).resolve()) for p in data]


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _model_kind(loc: tuple) -> tuple[tuple, str | None]:
    """A model's error location without the union's tag (`model.scripted.script` -> `model.script`), and
    the kind it was checked as."""
    for i, part in enumerate(loc):
        if part in _MODEL_KINDS and (loc[:i] == ("model",) or (i == 2 and loc[0] == "models")):
            return loc[:i] + loc[i + 1:], part
    return loc, None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML (with includes), apply `key=value` dotlist overrides, resolve, validate."""
    source = str(path) if path else "<defaults>"
    cfg = _load_yaml(Path(path)) if path else OmegaConf.create({})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. collect.concurrency=64)")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides or []))
        _switch_kinds(cfg, dotlist)
        cfg = OmegaConf.merge(cfg, dotlist)
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{source}: key {key}: {e.msg if hasattr(e, 'msg') else e}") from e
    return validate_config(data, source)


def _switch_kinds(cfg: DictConfig, overrides: DictConfig) -> None:
    """`model.kind=scripted` on a file written for another kind: the file's keys that the new kind does not
    have (`engine_kwargs`...) go, so switching a model's kind by override validates. Keys given as overrides
    stay, and one of another kind is still an error."""
    blocks = [("model",)] + [("models", str(n)) for n in (overrides.get("models") or {})]
    for path in blocks:
        given, have = OmegaConf.select(overrides, ".".join(path)), OmegaConf.select(cfg, ".".join(path))
        kind = given.get("kind") if isinstance(given, DictConfig) else None
        if kind in _MODEL_KINDS and isinstance(have, DictConfig):
            for key in [k for k in have if k not in _MODEL_KINDS[kind].model_fields]:
                del have[key]


def validate_config(data: dict, source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc, kind = _model_kind(err["loc"])
            key = _format_loc(loc) or "<top level>"
            got = err.get("input")
            if err["type"] == "extra_forbidden":
                of_kind = f" (not a key of kind {kind!r})" if kind else ""
                lines.append(f"{source}: unknown key {key}{of_kind}")
            elif err["type"] == "model_kind":
                lines.append(f"{source}: key {key}.kind: must be one of {', '.join(_MODEL_KINDS)} "
                             f"(got {got.get('kind')!r})")
            elif err["type"] == "missing" and kind:
                lines.append(f"{source}: key {key}: required when kind is {kind!r}")
            else:
                got_s = "" if isinstance(got, dict) else f" (got {got!r})"
                lines.append(f"{source}: key {key}: {err['msg']}{got_s}")
        raise ConfigError("\n".join(lines)) from None
