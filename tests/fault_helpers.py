"""Fault-injection helpers: scripted policies that solve `weather` and `counter` (every good rollout
scores 1.0), task sets built from the environments' example data, a way to SIGKILL the process of a
Serve replica, and the checks every faulted run must pass.

The scripts travel to the agent actors by value inside `ScriptClient` (tests call
`ray.cloudpickle.register_pickle_by_value` on this module), not as a `model.script` module path: a
`tests.*` path is not reliably importable in Ray workers (a wheel in the venv may ship its own top-level
`tests` package, which then shadows this folder).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

from gym_ray.config import ModelConfig
from gym_ray.models.scripted import LocalScriptedClient, ScriptedPolicy

ROOT = Path(__file__).resolve().parent.parent
_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
_WEATHER_CITY = re.compile(r"\b(?:in|for) ([A-Z][a-z]+(?: [A-Z][a-z]+)*)")
_WEATHER_RESULT = re.compile(r"The weather in ([^<]+?) is (\w+), (-?\d+) °C\.")
_COUNTER_OP = re.compile(r"\b(add|subtract|increase the counter by|increment the counter once)\s*(-?\d+)?", re.I)
_COUNTER_RESULT = re.compile(r"The counter is now (-?\d+)\.")


def _task_text(prompt_text: str) -> str:
    """The task's user message: the first user turn (tool results render as later user turns)."""
    found = _USER.findall(prompt_text)
    return found[0] if found else prompt_text


def weather_reply(prompt_text: str, turn: int):
    """Call get_weather for the city the user names, then answer with what the tool returned."""
    if turn == 0:
        cities = _WEATHER_CITY.findall(_task_text(prompt_text))
        return {"name": "get_weather", "arguments": {"city": cities[-1] if cities else "Paris"}}
    found = _WEATHER_RESULT.findall(prompt_text)
    if not found:
        return "I could not get the weather."
    city, condition, temp = found[-1]
    return f"It is {condition}, {temp} °C in {city}."


def counter_ops(user_text: str) -> list[int]:
    """The increments a counter task asks for, in order ("Add 2, then add 8" -> [2, 8])."""
    ops = []
    for verb, number in _COUNTER_OP.findall(user_text):
        verb = verb.lower()
        if verb.startswith("increment"):
            ops.append(1)
        elif number:
            ops.append(-int(number) if verb == "subtract" else int(number))
    return ops or [0]


def counter_reply(prompt_text: str, turn: int):
    """One increment per turn (so the episode's state spans several env calls), then the final value."""
    ops = counter_ops(_task_text(prompt_text))
    if turn < len(ops):
        return {"name": "increment", "arguments": {"count": ops[turn]}}
    found = _COUNTER_RESULT.findall(prompt_text)
    return f"The final value is {found[-1]}." if found else "I could not read the counter."


class ScriptClient(LocalScriptedClient):
    """The scripted policy in-process (`model.hosting: local`) with the function `fn` as its script.

    `gate`: a file path; while that file exists every generation waits (like a slow engine). A test
    closes the gate, kills a replica and opens it again once the fresh replica runs: every episode in
    flight then makes its next env call against a replica that has never seen its session — the path
    where a lost session once scored an `ok` row 0 (with an instant policy most episodes have a call in flight when the replica dies,
    and that call fails with the actor, which was retried even before the fix).
    """

    def __init__(self, cfg: ModelConfig, tokenizer_path: str, fn, gate: str | None = None,
                 gate_turn: int | None = None):
        super().__init__(cfg.model_copy(update={"replies": ["unused"], "script": None}), tokenizer_path)
        self.fn = fn
        self.gate = gate
        self.gate_turn = gate_turn  # None: every generation waits at the gate; N: only those of turn N

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        if self.gate and (self.gate_turn is None or self._p().turn(prompt_token_ids) == self.gate_turn):
            while os.path.exists(self.gate):
                await asyncio.sleep(0.05)
        return await super().generate(prompt_token_ids, sampling, session_id)

    def _p(self) -> ScriptedPolicy:
        if self._policy is None:
            policy = ScriptedPolicy(self.cfg, self._tokenizer_path)
            policy.fn = self.fn
            self._policy = policy
        return self._policy


def example_tasks(env: str, n: int):
    """`n` tasks cycling through `environments/<env>/data/example.jsonl`, each with its own task_id."""
    from gym_ray.types import Task

    rows = [json.loads(line) for line in (ROOT / "environments" / env / "data" / "example.jsonl").open()]
    return [Task.model_validate({**rows[i % len(rows)], "task_id": f"{rows[i % len(rows)]['task_id']}-{i}"})
            for i in range(n)]


def scripted_collect(config: Path, script, out: Path, *overrides: str) -> tuple[dict, list]:
    """Collect `config` on Ray with a scripted policy that runs `script` in the agent actors (chatml tool
    template); the summary and the rows, once the run's row checks held."""
    from gym_ray.collect.api import Collector, load_run_tasks
    from gym_ray.config import load_config
    from gym_ray.models.names import tokenizer_path_for
    from gym_ray.report.checks import run_checks
    from gym_ray.rundir import read_rollout_table
    from gym_ray.types import rollouts_from_arrow

    cfg = load_config(config, ["model.kind=scripted", "model.hosting=local", "model.chat_template=chatml_tools",
                               *overrides])
    policy = ScriptClient(cfg.model, tokenizer_path_for(cfg.model), script)
    with Collector(cfg, policy) as col:
        summary = asyncio.run(col.collect_to_dir(load_run_tasks(cfg), out, progress=False))
    report = run_checks(out)
    assert not report.contract_broken, report.to_json()["counts"]
    return summary, rollouts_from_arrow(read_rollout_table(out))


def replica_names(app: str) -> list[str]:
    """Names (namespace `serve`) of the live Serve replica actors of app `app`."""
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{app}#"))


def replica_pid(name: str) -> int:
    import ray

    actor = ray.get_actor(name, namespace="serve")
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def kill_replica(app: str) -> tuple[str, int]:
    """SIGKILL the process of the (one) replica of `app`: a crash, not a graceful stop. Serve's controller
    notices and starts a fresh replica with no sessions."""
    names = replica_names(app)
    assert names, f"no replica of {app!r} is running"
    pid = replica_pid(names[0])
    os.kill(pid, signal.SIGKILL)
    return names[0], pid


def wait_for_new_replica(app: str, old: str, timeout_s: float = 180.0) -> str:
    """Wait until a replica other than `old` exists and Serve reports the app running again."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [n for n in replica_names(app) if n != old]
        status = serve.status().applications.get(app)
        if fresh and status is not None and status.status == "RUNNING":
            return fresh[0]
        time.sleep(0.25)
    raise TimeoutError(f"no new replica of {app!r} after {timeout_s:g} s")


def audit(rows: list[dict], expected: set[tuple[str, int]]) -> dict:
    """Count what a faulted run must get right. `rows` are final segments (one per episode) as dicts."""
    keys = Counter((r["task_id"], r["rollout_index"]) for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    return {
        "expected": len(expected),
        "present": len(set(keys) & expected),
        "unexpected": len(set(keys) - expected),
        "duplicated": sum(n - 1 for n in keys.values() if n > 1),
        "misscored": sum(1 for r in ok if r["reward"] != 1.0 or r["mask_sample"])
        + sum(1 for r in failed if not (r["mask_sample"] and r["failure_stage"] and r["failure_kind"])),
        "no_session_shown": sum(1 for r in rows if "no session" in (r["messages_json"] or "")),
        "failed": len(failed),
        "retried": sum(1 for r in rows if r["attempt"] >= 1),
        "lost": len(expected - set(keys)),
        "statuses": dict(Counter(r["status"] for r in rows)),
    }
