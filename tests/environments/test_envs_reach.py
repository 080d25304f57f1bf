"""`gym-ray envs` counts what each adapter reaches from what is installed here: the verifiers packages, every
reasoning-gym dataset, every TextArena game, and each NeMo Gym venv's resources servers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import reasoning_gym
from textarena.envs.registration import ENV_REGISTRY

from gym_ray.catalogue import MEASURED_NEMO_GYM, reachable
from gym_ray.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_each_adapter_counts_what_it_reaches(tmp_path, monkeypatch, capsys):
    servers = tmp_path / ".venv-nemogym-9.9" / "lib" / "python3.13" / "site-packages" / "resources_servers"
    for name in ("example_single_tool_call", "blackjack"):
        (servers / name / "configs").mkdir(parents=True)
    (servers / "not_a_server").mkdir()
    reach = {r.adapter: r for r in reachable(tmp_path)}
    measured = json.loads(MEASURED_NEMO_GYM.read_text())  # what benchmarks/nemo_gym_servers.py saw
    assert set(reach) == {"verifiers", "reasoning-gym", "textarena", "nemo-gym (.venv-nemogym-9.9)",
                          f"nemo-gym {measured['nemo_gym']}"}
    assert reach[f"nemo-gym {measured['nemo_gym']}"].names == tuple(
        sorted(s["server"] for s in measured["servers"] if s["scored"]))
    assert {"gym-ray-vf-units", "gym-ray-vf-guess"} <= set(reach["verifiers"].names)
    assert reach["verifiers"].count == len(reach["verifiers"].names)
    assert reach["reasoning-gym"].names == tuple(sorted(reasoning_gym.factory.DATASETS))
    assert reach["textarena"].count == len(ENV_REGISTRY) and "GuessTheNumber-v0" in reach["textarena"].names
    assert reach["nemo-gym (.venv-nemogym-9.9)"].names == ("blackjack", "example_single_tool_call")

    monkeypatch.chdir(tmp_path)
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^nemo-gym \(\.venv-nemogym-9\.9\) +2 resources servers ", out, re.M)
    assert re.search(rf"^reasoning-gym +{len(reasoning_gym.factory.DATASETS)} datasets ", out, re.M)
    assert re.search(rf"^verifiers +{reach['verifiers'].count} installed environment packages ", out, re.M)
