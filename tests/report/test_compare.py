"""`gym-ray compare`: two runs of the same (scripted, seeded) policy give differences whose intervals hold 0;
the scripted perfect policy against a clueless one is significant; so is a real gap between two noisy policies,
and no gap is not."""

from __future__ import annotations

import random

import pytest
import report_runs

from gym_ray.cli import main
from gym_ray.report.compare import ALL, compare_runs
from gym_ray.types import Rollout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    for name, script in [("a", "perfect"), ("b", "perfect"), ("clueless", "clueless")]:
        report_runs.collect(d / name, f"report_runs:{script}", num_repeats=2)
    return d


def test_same_policy_twice_differs_by_nothing_and_perfect_beats_clueless(runs, tmp_path, capsys):
    same = compare_runs([runs / "a", runs / "b"])
    assert same.paired == [True]
    for key, [d] in same.diffs.items():
        assert d.low <= 0 <= d.high and not d.significant, key
    gap = compare_runs([runs / "clueless", runs / "a"])
    for metric in ("reward", "pass@1", "pass@2"):
        [d] = gap.diffs[(metric, ALL)]
        assert d.value == pytest.approx(1.0) and d.significant
    html = tmp_path / "cmp.html"
    assert main(["compare", str(runs / "clueless"), str(runs / "a"), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "+1.000 [+1.000, +1.000] *" in out and "weather" in out and "paired by task" in out
    assert "<td class='sig'>+1.000" in html.read_text()


def _bernoulli_run(path, p: float, seed: int, tasks: int = 150, n: int = 4) -> None:
    """A synthetic run: every rollout of every task passes with probability p."""
    rng = random.Random(seed)
    rows = [Rollout(rollout_id=f"t{t}-{i}", group_id=f"g{t}", task_id=f"t{t}", env="coin", rollout_index=i,
                    group_size=n, reward=float(rng.random() < p))
            for t in range(tasks) for i in range(n)]
    report_runs.write_rows(path, rows)


def test_noisy_runs_no_gap_holds_zero_and_a_real_gap_is_significant(tmp_path):
    _bernoulli_run(tmp_path / "p5a", 0.5, seed=1)
    _bernoulli_run(tmp_path / "p5b", 0.5, seed=2)
    _bernoulli_run(tmp_path / "p8", 0.8, seed=3)
    [same] = compare_runs([tmp_path / "p5a", tmp_path / "p5b"]).diffs[("reward", ALL)]
    assert same.low < 0 < same.high and not same.significant
    [gap] = compare_runs([tmp_path / "p5a", tmp_path / "p8"]).diffs[("reward", ALL)]
    assert gap.significant and 0.2 < gap.value < 0.4 and gap.low > 0.15


def test_compare_needs_run_dirs(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "at least two run directories" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "no rollout files" in capsys.readouterr().err
