"""What `gym-ray envs` lists: the installed environment packages, and what each adapter can reach.

Only metadata and imports: no Ray. An environment package's kind and tools come from its server class
(`reset` makes it step-driven, `@tool` methods are its tools), its verifier and origin from the class's
`verifier` / `origin` lines. A package that fails to import is listed with the error, not skipped.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from gym_ray.environments import entry_points


@dataclass(frozen=True)
class EnvPackage:
    name: str
    kind: str
    tools: str
    verifier: str
    origin: str
    package: str  # distribution and version
    server: str  # what the short name resolves to


@dataclass(frozen=True)
class Reach:
    """What one adapter can reach here: `count` of `unit`, named in a config as `server`."""

    adapter: str
    count: int
    unit: str
    server: str
    names: tuple[str, ...] = ()


def installed() -> list[EnvPackage]:
    """Every installed environment package, by name."""
    from gym_ray.resources.server import ResourceServer

    out = []
    for name, ep in sorted(entry_points().items()):
        package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        try:
            cls = ep.load()
        except Exception as e:  # a broken package is listed with its cause; the others still are
            out.append(EnvPackage(name, f"error: {type(e).__name__}: {e}", "", "", "", package, ep.value))
            continue
        if not (isinstance(cls, type) and issubclass(cls, ResourceServer)):
            out.append(EnvPackage(name, "error: not a ResourceServer subclass", "", "", "", package, ep.value))
            continue
        out.append(EnvPackage(name, kind_of(cls), tools_of(cls), cls.verifier, cls.origin, package, ep.value))
    return out


def kind_of(cls: type) -> str:
    from gym_ray.resources.server import ResourceServer

    if cls.reset is not ResourceServer.reset:
        return "env step"
    return "tool calling" if cls.tool_defs or cls.forwards_tools() else "single turn"


def tools_of(cls: type) -> str:
    tools = list(cls.tool_defs)
    if cls.forwards_tools():
        tools.append("(forwarded)")
    return ", ".join(tools) or "none"


def reachable(root: Path, measured_only: bool = False) -> list[Reach]:
    """Each adapter's reachable set. NeMo Gym's: the servers that ran on their example data when
    benchmarks/nemo_gym_servers.py measured them, and (unless `measured_only`) what the `.venv-nemogym-*`
    venvs under `root` hold."""
    out = [_verifiers(),
           _registry("reasoning-gym", "reasoning_gym.factory", "DATASETS", "datasets",
                     "reasoning_gym (each task names its dataset)"),
           _registry("textarena", "textarena.envs.registration", "ENV_REGISTRY", "games (single-player ones run)",
                     "textarena (config.env_id)")]
    out.append(_nemo_gym_measured())
    if not measured_only:
        out += [_nemo_gym(venv) for venv in sorted(root.glob(".venv-nemogym-*")) if venv.is_dir()]
    return [r for r in out if r is not None]


def _requires(dist: metadata.Distribution, name: str) -> bool:
    return any(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower() == name for r in dist.requires or ())


def _verifiers() -> Reach | None:
    """verifiers environment packages: installed distributions that require `verifiers`."""
    try:
        metadata.distribution("verifiers")
    except metadata.PackageNotFoundError:
        return None
    names = sorted({d.metadata["Name"] for d in metadata.distributions() if _requires(d, "verifiers")})
    return Reach("verifiers", len(names), "installed environment packages", "verifiers:<name>", tuple(names))


def _registry(adapter: str, module: str, attr: str, unit: str, server: str) -> Reach | None:
    """The names in a library's own registry (a dict of `module.attr`), where the library is installed."""
    try:
        names = tuple(sorted(getattr(importlib.import_module(module), attr)))
    except ImportError:
        return None
    return Reach(adapter, len(names), unit, server, names)


def _nemo_gym(venv: Path) -> Reach | None:
    servers = sorted(p.parent.name for p in venv.glob("lib/python*/site-packages/resources_servers/*/configs"))
    if not servers:
        return None
    return Reach(f"nemo-gym ({venv.name})", len(servers), "resources servers",
                 "gym_ray.integrations.nemo_gym.bridge:NemoGymResources (config.server)", tuple(servers))


# What benchmarks/nemo_gym_servers.py measured: every resources server of NeMo Gym's source distribution,
# run through the bridge on its own data/example.jsonl.
MEASURED_NEMO_GYM = Path(__file__).parent / "integrations" / "nemo_gym" / "servers.json"


def _nemo_gym_measured() -> Reach | None:
    if not MEASURED_NEMO_GYM.is_file():
        return None
    measured = json.loads(MEASURED_NEMO_GYM.read_text())
    ran = tuple(sorted(s["server"] for s in measured["servers"] if s["scored"]))
    seen = sum(1 for s in measured["servers"] if s["started"] or s["why"])  # the rest: not measured yet
    return Reach(f"nemo-gym {measured['nemo_gym']}", len(ran),
                 f"resources servers scored their example rows (of {seen} measured)",
                 "gym_ray.integrations.nemo_gym.bridge:NemoGymResources (config.server)", ran)


def render(packages: list[EnvPackage], reach: list[Reach]) -> str:
    """The two tables `gym-ray envs` prints."""
    rows = [("env", "kind", "tools", "verifier", "origin", "package")]
    rows += [(p.name, p.kind, p.tools, p.verifier, p.origin, p.package) for p in packages]
    lines = [f"{len(packages)} environment packages (entry points of 'gym_ray.environments'; server: <env>)",
             *_table(rows), "", "what each adapter reaches"]
    lines += _table([("adapter", "count", "server"),
                     *((r.adapter, f"{r.count} {r.unit}", r.server) for r in reach)])
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


# --- environments/README.md's catalogue, generated from the packages' own metadata -------------------------
BEGIN, END = "<!-- catalogue: generated by `gym-ray envs --markdown`; do not edit -->", "<!-- /catalogue -->"


@dataclass(frozen=True)
class Row:
    """One shipped environment folder as the catalogue shows it."""

    name: str
    kind: str
    tools: str
    verifier: str
    metric: str
    origin: str

    @property
    def command(self) -> str:
        return f"gym-ray run environments/{self.name}/config.yaml model.kind=scripted"


def shipped(root: Path) -> list[Row]:
    """Each `environments/<name>/config.yaml` under `root`, described by the server class its config names
    (a verifiers package by the adapter's lines and its own id)."""
    from gym_ray.config import load_config
    from gym_ray.resources.runtime import import_server

    rows = []
    for config in sorted(root.glob("environments/*/config.yaml")):
        name = config.parent.name
        env = load_config(config).envs[name]
        cls = import_server(env.server)
        step = env.agent.cls == "gym_ray.agents.env_step:EnvStepAgent"
        if cls.__module__.startswith("gym_ray.integrations."):  # an adapter: the package is the environment
            origin = f"{cls.origin} `verifiers:{env.config['taskset']}`" if "taskset" in env.config else cls.origin
            rows.append(Row(name, "env step" if step else "tool calling", "the package's", cls.verifier,
                            cls.metric, origin))
        else:
            calls = "tool calling" if cls.tool_defs or cls.forwards_tools() else "single turn"
            rows.append(Row(name, "env step" if step else calls, tools_of(cls), cls.verifier, cls.metric, cls.origin))
    return rows


def is_benchmark(row: Row) -> bool:
    """A benchmark with its real data: its origin names the package and version the data and grader are from."""
    return "==" in row.origin


def markdown(rows: list[Row], reach: list[Reach]) -> str:
    """The catalogue section of environments/README.md: counts, then one table row per environment."""
    real = sum(map(is_benchmark, rows))
    lines = [BEGIN,
             f"{len(rows)} environments ship here: {real} benchmarks with their real data and their own grader "
             f"(the origin names the package), {len(rows) - real} written for gym_ray or wrapping a library. "
             "Each runs on the scripted policy with its one-line "
             "command (drop `model.kind=scripted` for the embedded vLLM policy); the metric is what `gym-ray "
             "metrics` and the report lead with.", "",
             "| env | kind | tools | verifier | metric | origin | run |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        tools = ", ".join(f"`{t}`" if t.isidentifier() and t != "none" else t for t in r.tools.split(", "))
        lines.append(f"| `{r.name}` | {r.kind} | {tools} | {r.verifier} | {r.metric} | {r.origin} | "
                     f"`{r.command}` |")
    if reach:
        lines += ["", "Reachable through the adapters (`gym-ray envs` lists them by name):", ""]
        lines += [f"- {r.adapter}: {r.count} {r.unit} (`server: {r.server}`)" for r in reach]
    lines.append(END)
    return "\n".join(lines)


def splice(readme: str, section: str) -> str:
    """`readme` with its generated section replaced by `section`."""
    head, sep, rest = readme.partition(BEGIN)
    if not sep or END not in rest:
        raise ValueError(f"the README has no generated catalogue section ({BEGIN!r} ... {END!r})")
    return head + section + rest.split(END, 1)[1]
