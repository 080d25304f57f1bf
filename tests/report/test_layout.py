"""The run directory as a dataset: HF `datasets`, pandas and Ray Data read it as it is, because everything
but the Parquet parts lives in the hidden `.gym_ray/`; an old directory (top-level `_run.json`, `_lock`,
`metrics.json`) still loads with `gym-ray metrics`, resumes, and is moved into the new layout on resume."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import textwrap
from pathlib import Path

import datasets
import pandas as pd
import pytest
import ray

from gym_ray.cli import main
from gym_ray.rundir import RunDir, RunDirError, hold, part_files, read_rollout_table
from gym_ray.rundir.location import CARD, CONFIG, MANIFEST, METRICS, REPORT

ROOT = Path(__file__).resolve().parents[2]
WEATHER_DATA = ROOT / "environments" / "weather" / "data" / "example.jsonl"


def _config(tmp_path: Path, out: Path) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{kind: scripted, hosting: local, replies: [{{name: get_weather, arguments: {{city: Paris}}}},
                 "The weather in Paris is sunny."]}}
        envs:
          weather: {{server: "gym_ray_env_weather.server:Weather", hosting: local, data: ["{WEATHER_DATA}"]}}
        collect: {{output_dir: "{out}", num_repeats: 2, limit: 3}}
    """))
    return cfg


def _loads_everywhere(out: Path, rows: int, cache: Path) -> None:
    """What a trainer's data loader does with the directory, unchanged."""
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(cache))
    assert ds.num_rows == rows and "response_token_ids" in ds.column_names
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train", cache_dir=str(cache))
    assert ds.num_rows == rows
    df = pd.read_parquet(out)
    assert len(df) == rows and sorted(df["task_id"].unique()) == ["weather-0", "weather-1", "weather-2"]
    assert ray.data.read_parquet(str(out)).count() == rows


def test_run_dir_loads_with_datasets_pandas_and_ray(tmp_path, serve_http_port, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_config(tmp_path, out))]) == 0, capsys.readouterr().err[-3000:]
    assert [p.name for p in out.iterdir() if not p.name.startswith("part-")] == [".gym_ray"]
    assert json.loads(RunDir.of(out).meta(METRICS).read_text())["overall"]["rollouts"] == 6
    assert json.loads(RunDir.of(out).meta(CONFIG).read_text())["collect"]["num_repeats"] == 2
    assert json.loads(RunDir.of(out).meta(MANIFEST).read_text())["num_repeats"] == 2
    _loads_everywhere(out, 6, tmp_path / "hf")
    printed = capsys.readouterr().out
    assert "contract holds" in printed and f"report: {RunDir.of(out).meta(REPORT)}" in printed
    assert main(["metrics", str(out)]) == 0 and "weather" in capsys.readouterr().out

    hub = tmp_path / "hub"  # what the card's push commands upload: the parts, and the card as README.md
    hub.mkdir()
    for part in part_files(out):
        shutil.copy(part, hub / part.name)
    shutil.copy(RunDir.of(out).meta(CARD), hub / "README.md")
    card = (hub / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n") and "| `response_loss_mask` | `list<item: int8>` |" in card
    assert "## Metrics" in card and "## Run config" in card and "hf upload" in card
    assert datasets.load_dataset(str(hub), split="train", cache_dir=str(tmp_path / "hf")).num_rows == 6


def _make_legacy(out: Path) -> None:
    """The layout before `.gym_ray/`: manifest (which recorded no run identity then), lock and metrics beside
    the parts."""
    meta = out / ".gym_ray"
    manifest = json.loads((meta / MANIFEST).read_text())
    del manifest["identity"]
    (out / "_run.json").write_text(json.dumps(manifest))
    (meta / MANIFEST).unlink()
    os.replace(meta / METRICS, out / "metrics.json")
    os.replace(meta / "lock", out / "_lock")
    shutil.rmtree(meta)


def test_old_run_dir_loads_with_metrics_resumes_and_moves_into_the_new_layout(tmp_path, serve_http_port, capsys):
    out = tmp_path / "out"
    cfg = _config(tmp_path, out)
    assert main(["run", str(cfg), "collect.limit=2"]) == 0, capsys.readouterr().err[-3000:]
    _make_legacy(out)
    run_id = json.loads((out / "_run.json").read_text())["run_id"]
    first = part_files(out)

    assert main(["metrics", str(out)]) == 0
    assert "weather" in capsys.readouterr().out
    assert RunDir.of(out).meta(METRICS).is_file() and not (out / "metrics.json").exists()

    fd = os.open(out / "_lock", os.O_RDWR)  # an older gym_ray still writing there
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(RunDirError, match="another run is writing"):
            with hold(out):
                pass
    finally:
        os.close(fd)

    assert main(["run", str(cfg), "--resume"]) == 0, capsys.readouterr().err[-3000:]
    assert "resuming" in capsys.readouterr().out
    assert part_files(out)[:len(first)] == first and len(part_files(out)) > len(first)
    manifest = json.loads(RunDir.of(out).meta(MANIFEST).read_text())
    assert manifest["run_id"] == run_id and manifest["identity"]["tasks"]["count"] == 3  # the same groups, now known
    assert read_rollout_table(out).num_rows == 6
    assert [p.name for p in out.iterdir() if not p.name.startswith("part-")] == [".gym_ray"]
    _loads_everywhere(out, 6, tmp_path / "hf")
