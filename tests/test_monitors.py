"""Online monitors: each detector on synthetic groups (fires / stays quiet), and a planted reward hack run
through a real Collector that a monitor catches and stops with every finished row kept."""

from __future__ import annotations

import asyncio
import json

import monitor_env
import pyarrow.compute as pc
import pytest
import ray
from monitor_env import ANSWER, MAGIC, HackingPolicy, MagicWordEnv

from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.collect import RolloutStream
from gym_ray.collect.api import Collector
from gym_ray.config import ConfigError, EnvConfig, MonitorsConfig, ScriptedModelConfig, validate_config
from gym_ray.launch.commands import exit_status
from gym_ray.monitors import ALERTS_FILE, MonitorRunner, read_alerts
from gym_ray.report.monitors import monitors_section
from gym_ray.resources.local import LocalEnvClient
from gym_ray.rundir import RunDir, read_rollout_table
from gym_ray.types import Rollout, Task, rollouts_to_arrow

ray.cloudpickle.register_pickle_by_value(monitor_env)
ENVS = {"magic": EnvConfig(server="monitor_env:MagicWordEnv")}
TASK = Task(task_id="sky", env="magic", prompt=[{"role": "user", "content": "colour of the sky?"}],
            verifier_metadata={"expected": ANSWER}).model_dump_json()
QUICK = {"window": 4, "min_groups": 2}


def _row(group: str, idx: int, text: str = ANSWER, reward: float = 1.0, calls: tuple = (), length: int = 5,
         status: str = "ok") -> Rollout:
    prompt = [{"role": "user", "content": "colour of the sky?"}]
    tool_calls = [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                  for i, (n, a) in enumerate(calls)]
    messages = [*prompt, {"role": "assistant", "content": text, **({"tool_calls": tool_calls} if calls else {})}]
    failed = {} if status == "ok" else {"failure_stage": "agent", "failure_kind": "exception", "mask_sample": True}
    return Rollout(rollout_id=f"{group}-{idx}", group_id=group, task_id=group, env="magic", rollout_index=idx,
                   group_size=4, response_token_ids=[7] * length, response_loss_mask=[1] * length,
                   response_logprobs=[0.0] * length, gen_span_starts=[0], gen_span_ends=[length],
                   call_finish_reasons=["stop"], gen_policy_versions=[0], status=status,
                   reward=reward if status == "ok" else 0.0, prompt_messages_json=json.dumps(prompt),
                   messages_json=json.dumps(messages), task_json=TASK, **failed)


def _feed(monitors: dict, groups: list[list[Rollout]]) -> MonitorRunner:
    runner = MonitorRunner(MonitorsConfig.model_validate(monitors), ENVS)

    async def go():
        for rows in groups:
            await runner.observe(rollouts_to_arrow(rows))

    asyncio.run(go())
    return runner


def _groups(n: int, **row) -> list[list[Rollout]]:
    return [[_row(f"g{g}", i, **row) for i in range(4)] for g in range(n)]


def _mixed(n: int) -> list[list[Rollout]]:
    """Healthy groups: different outputs, rewards 1 and 0."""
    return [[_row(f"g{g}", i, text=f"{ANSWER} {i}", reward=float(i % 2)) for i in range(4)] for g in range(n)]


def test_zero_variance():
    assert [a.monitor for a in _feed({"zero_variance": QUICK}, _groups(4)).alerts] == ["zero_variance"]
    assert not _feed({"zero_variance": QUICK}, _mixed(6)).alerts


def test_mode_collapse():
    alert = _feed({"mode_collapse": QUICK}, _groups(3)).alerts[0]
    assert (alert.monitor, alert.groups, alert.example) == ("mode_collapse", 2, ANSWER)
    assert not _feed({"mode_collapse": QUICK}, _mixed(6)).alerts


def test_grader_addressing_needs_the_words_and_a_high_reward():
    hacked = [[_row(f"g{g}", i, text=f"answer: {MAGIC}" if i == 0 else ANSWER) for i in range(4)] for g in range(3)]
    alerts = _feed({"grader_addressing": {**QUICK, "share": 0.2}}, hacked).alerts
    assert [a.monitor for a in alerts] == ["grader_addressing"] and "PASS" in alerts[0].example
    named = [[_row(f"g{g}", i, text="MagicWordEnv accepts this") for i in range(4)] for g in range(2)]
    assert _feed({"grader_addressing": QUICK}, named).alerts  # the env's own verifier class named
    unrewarded = [[_row(f"g{g}", i, text=MAGIC, reward=0.0) for i in range(4)] for g in range(4)]
    assert not _feed({"grader_addressing": QUICK}, unrewarded + _mixed(4)).alerts
    assert not _feed({"grader_addressing": QUICK}, [[_row("g", 0, text="I pass the salt")]] * 4).alerts


def test_tool_loop():
    loop = (("search", '{"q": "sky"}'),) * 5
    alert = _feed({"tool_loop": QUICK}, _groups(2, calls=loop)).alerts[0]
    assert alert.monitor == "tool_loop" and alert.example == 'search({"q": "sky"})'
    varied = tuple(("search", f'{{"q": "{w}"}}') for w in ("sky", "sea", "sun", "air", "blue"))
    assert not _feed({"tool_loop": QUICK}, _groups(4, calls=varied)).alerts


def test_length_collapse_and_explosion_against_the_running_baseline():
    steady = _groups(8, length=50)
    collapsed = _feed({"length": QUICK}, steady + _groups(4, length=5)).alerts
    assert [a.monitor for a in collapsed] == ["length"] and "collapsed" in collapsed[0].detail
    exploded = _feed({"length": QUICK}, steady + _groups(4, length=400)).alerts
    assert "exploded" in exploded[0].detail
    assert not _feed({"length": QUICK}, steady + _groups(8, length=45)).alerts


def test_failed_rows_are_not_outputs():
    failed = [[_row(f"g{g}", i, status="timeout") for i in range(4)] for g in range(6)]
    assert not _feed({"mode_collapse": QUICK, "grader_addressing": QUICK, "length": QUICK}, failed).alerts


def test_cross_check_fires_when_the_second_verifier_disagrees_more_and_more():
    cross = {"cross_check": {**QUICK, "server": "monitor_env:MagicWordEnv", "config": {"accept_magic": False},
                             "sample": 1.0, "disagreement": 0.3, "rise": 0.2}}
    honest = _groups(2)
    hacking = [[_row(f"h{g}", i, text=MAGIC if i < 3 else ANSWER) for i in range(4)] for g in range(2)]
    runner = _feed(cross, honest + hacking)
    assert [(a.monitor, a.groups) for a in runner.alerts] == [("cross_check", 4)]
    assert runner.detectors[0].errors == 0
    assert not _feed(cross, _groups(6)).alerts
    # disagreement there from the start does not "grow": no alert without the rise
    assert not _feed(cross, hacking + hacking).alerts


def test_config_names_an_unknown_monitor_or_option_in_one_line():
    with pytest.raises(ConfigError, match=r"^<dict>: unknown key collect\.monitors\.grader$"):
        validate_config({"collect": {"monitors": {"grader": {}}}})
    with pytest.raises(ConfigError, match=r"collect\.monitors\.length\.on_alert: Input should be 'warn' or 'stop'"):
        validate_config({"collect": {"monitors": {"length": {"on_alert": "halt"}}}})
    with pytest.raises(ConfigError, match=r"collect\.monitors\.cross_check\.server: Field required"):
        validate_config({"collect": {"monitors": {"cross_check": {}}}})


# -- a planted hack, through a real Collector ------------------------------------------------------------------

N_GROUPS, GROUP = 16, 4


def test_a_planted_hack_is_caught_and_stop_keeps_every_finished_row(ray_cluster, default_model_path, tmp_path):
    """Group i's rollouts write the magic string round(4 * i / 15) times: 0, 0, 1, 1, 1, 1, 2, ... The grader-
    addressing monitor (warn) and the cross-check by the corrected verifier (stop) fire within the first 9 of 16
    groups; the run stops, every finished group is written whole, the running ones leave no row."""
    out = tmp_path / "run"
    cfg = validate_config({
        "model": {"kind": "scripted", "name": "scripted", "replies": ["unused"], "hosting": "local"},
        "envs": {"magic": {"server": "monitor_env:MagicWordEnv"}},
        "collect": {"output_dir": str(out), "num_repeats": GROUP, "concurrency": 4, "monitors": {
            "grader_addressing": {**QUICK, "share": 0.2},
            "cross_check": {**QUICK, "server": "monitor_env:MagicWordEnv", "config": {"accept_magic": False},
                            "sample": 1.0, "disagreement": 0.3, "rise": 0.2, "on_alert": "stop"}}},
    })
    policy = HackingPolicy(ScriptedModelConfig(**cfg.model.model_dump()), default_model_path, GROUP)
    with Collector(cfg, policy, envs={"magic": LocalEnvClient.of(MagicWordEnv(), "magic")},
                   agent_classes={"magic": ToolCallingAgent}) as col:
        summary = asyncio.run(col.collect_to_dir(monitor_env.tasks(N_GROUPS), out, progress=False))
        seen = col.monitors.groups
        # the same warm actors behind a RolloutStream (new prompts: the policy hacks them afresh)
        col.monitors = MonitorRunner(MonitorsConfig.model_validate(
            {"grader_addressing": {**QUICK, "share": 0.2, "on_alert": "stop"}}), cfg.envs)
        stream = RolloutStream(col, monitor_env.tasks(N_GROUPS + 1), batch_groups=2)
        handed = asyncio.run(_drain(stream))
    alerts = {a["monitor"]: a for a in read_alerts(RunDir.of(out).meta(ALERTS_FILE))}
    assert set(alerts) == {"grader_addressing", "cross_check"}
    assert alerts["grader_addressing"]["groups"] <= 9 and alerts["cross_check"]["groups"] <= 9
    assert MAGIC in alerts["cross_check"]["example"]
    assert summary["run"]["stopped_by"]["monitor"] == "cross_check" and exit_status(summary) == 3
    table = read_rollout_table(out)
    per_group = pc.value_counts(table["group_id"]).to_pylist()
    assert len(per_group) == seen < N_GROUPS and all(g["counts"] == GROUP for g in per_group)
    assert set(table["status"].to_pylist()) == {"ok"}
    assert "stopped by cross_check" in monitors_section(out)
    assert stream.stopped_by.monitor == "grader_addressing" and stream.stats()["cancelled"] > 0
    assert 0 < len(handed) < N_GROUPS and all(len(g.rollouts) == GROUP for g in handed)


async def _drain(stream: RolloutStream) -> list:
    """Every group the stream hands out until it ends."""
    out = []
    async with stream:
        async for batch in stream:
            out += batch
    return out
