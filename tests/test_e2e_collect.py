"""End to end with the real default model on vLLM (CPU): Parquet rows that are token-exact per call."""

from __future__ import annotations

import asyncio
import json
import os

import collect_fakes
import pyarrow.parquet as pq
import pytest
import ray
from collect_fakes import CallRecorder, RecordingPolicy

from gym_ray.collect.api import Collector, load_run_tasks
from gym_ray.config import validate_config
from gym_ray.models.client import make_policy_client
from gym_ray.rundir import part_files, read_rollout_table
from gym_ray.types import ROLLOUT_SCHEMA, rollouts_from_arrow

ray.cloudpickle.register_pickle_by_value(collect_fakes)
ENVS = os.path.join(os.path.dirname(__file__), "..", "environments")


@pytest.mark.slow
def test_vllm_run_writes_token_exact_complete_groups(tmp_path, shared_vllm):
    model, app = shared_vllm  # the default model on vLLM, chatml_tools, max_model_len 2048
    cfg = validate_config({
        "model": model,
        "envs": {
            "weather": {"server": "gym_ray_env_weather.server:Weather", "hosting": "local",
                        "data": [f"{ENVS}/weather/data/example.jsonl"], "agent": {"max_turns": 3}},
            "math": {"server": "gym_ray_env_math.server:Math", "hosting": "local",
                     "data": [f"{ENVS}/math/data/example.jsonl"], "agent": {"max_turns": 1}},
        },
        "collect": {"limit": 2, "num_repeats": 2, "concurrency": 8, "episode_timeout_s": 300,
                    "sampling": {"temperature": 1.0, "max_tokens": 48, "seed": 0}},
    })
    recorder = CallRecorder.remote()
    try:
        policy = RecordingPolicy(make_policy_client(cfg.model, app), recorder)
        with Collector(cfg, policy, apps={"policy": app}) as col:
            summary = asyncio.run(col.collect_to_dir(load_run_tasks(cfg), tmp_path, progress=False))
        calls = ray.get(recorder.dump.remote())
    finally:
        ray.kill(recorder)

    assert pq.read_schema(part_files(tmp_path)[0]) == ROLLOUT_SCHEMA
    rows = rollouts_from_arrow(read_rollout_table(tmp_path))
    assert summary["overall"]["rollouts"] == 8
    groups: dict[str, set] = {}
    for r in rows:
        r.check_invariants()  # lengths, masks 1 exactly on generated spans, spans inside the response
        groups.setdefault(r.group_id, set()).add(r.rollout_index)
    assert sorted(map(sorted, groups.values())) == [[0, 1]] * 4  # complete groups
    checked = 0
    for rollout_id in {r.rollout_id for r in rows}:
        segments = sorted((r for r in rows if r.rollout_id == rollout_id), key=lambda r: r.segment_index)
        if segments[0].status.value in ("infra_error", "timeout"):
            continue
        session_calls = [c for sid, cs in calls.items() if sid.startswith(rollout_id + ".") for c in cs]
        assert len(session_calls) == sum(len(s.gen_span_starts) for s in segments), rollout_id
        k = 0
        for seg in segments:
            seq = seg.prompt_token_ids + seg.response_token_ids
            for start, end in zip(seg.gen_span_starts, seg.gen_span_ends, strict=True):
                engine_prompt, generated = session_calls[k]
                p = len(seg.prompt_token_ids)
                assert seq[: p + start] == engine_prompt, f"{rollout_id} call {k}: prompt differs from the engine's"
                assert seq[p + start : p + end] == generated, f"{rollout_id} call {k}: generated ids differ"
                k += 1
                checked += 1
        assert json.loads(segments[-1].sampling_params_json)["max_tokens"] == 48
    assert checked >= 8  # at least one model call per rollout was verified against the engine
