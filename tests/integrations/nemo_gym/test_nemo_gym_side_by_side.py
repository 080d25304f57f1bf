"""gym-ray and an environment package installed next to nemo-gym 0.7.0 in one Python 3.13 interpreter: nemo-gym's
top-level `environments` and gym_ray's environment package (`gym_ray_env_blackjack`) both resolve, neither
shadows the other."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from nemo_gym_procs import ROOT, nemo_venv

PROBE = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
import environments, nemo_gym
print(json.dumps({
    "nemo_envs": environments.__path__[0], "nemo_gym": nemo_gym.__file__,
    "nemo_blackjack": importlib.util.find_spec("environments.blackjack").origin,
    "gym_ray_blackjack": importlib.util.find_spec("gym_ray_env_blackjack.server").origin,
    "top_level": sorted(p.name for p in __import__("pathlib").Path(sys.argv[1]).iterdir()),
}))
"""


@pytest.mark.slow
def test_gym_ray_and_nemo_gym_07_environments_side_by_side(tmp_path):
    venv = nemo_venv("0.7")
    site = tmp_path / "site"
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", "--target", str(site), str(ROOT),
                    str(ROOT / "environments" / "blackjack")],
                   check=True, capture_output=True, timeout=600)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE, str(site)], check=True, capture_output=True,
                         text=True, timeout=120)
    found = json.loads(out.stdout)
    nemo_site = Path(found["nemo_gym"]).parents[1]
    assert Path(found["nemo_envs"]).parent == nemo_site  # nemo-gym's own `environments`
    assert Path(found["nemo_blackjack"]).is_relative_to(nemo_site)
    assert found["gym_ray_blackjack"] == str(site / "gym_ray_env_blackjack" / "server.py")
    # what the two distributions put on the path: their packages, their metadata and the console script
    assert [n for n in found["top_level"] if not n.endswith(".dist-info") and n != "bin"] == [
        "gym_ray", "gym_ray_env_blackjack"]
