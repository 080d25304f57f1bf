"""The docs site builds with `mkdocs build --strict`: every README is a page, the API reference renders from
the docstrings, and a broken link, a broken anchor or a nav entry without its page fails the build."""

from __future__ import annotations

import logging
import re
import shlex
import shutil
from pathlib import Path

import pytest
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.exceptions import Abort

from gym_ray.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
READMES = sorted(p.relative_to(ROOT).as_posix() for p in [
    ROOT / "README.md", ROOT / "environments" / "README.md", *ROOT.glob("environments/*/README.md"),
    *ROOT.glob("gym_ray/**/README.md"), ROOT / "deploy" / "README.md"])


def _build(site: Path, **overrides) -> None:
    build(load_config(config_file=str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True, **overrides))


def test_site_builds_strict_from_the_readmes(tmp_path):
    site = tmp_path / "site"
    _build(site)
    pages = {readme: site / Path(readme).parent / "index.html" for readme in READMES}
    assert [readme for readme, page in pages.items() if not page.is_file()] == []
    assert (site / "benchmarks" / "RESULTS" / "index.html").is_file()
    for name in ("install", "first-run", "first-environment", "train-trl", "cluster"):
        assert (site / "tutorial" / name / "index.html").is_file()
    # the reference is rendered from the docstrings: each public name gets its heading
    author = (site / "reference" / "author" / "index.html").read_text()
    for name in ("ResourceServer", "tool", "VerifyResult", "StepResult", "Task"):
        assert f'id="gym_ray.{"resources" if name in ("ResourceServer", "tool") else "types"}.{name}"' in author
    assert 'id="gym_ray.collect.Collector"' in (site / "reference" / "collect" / "index.html").read_text()
    assert 'id="gym_ray.episodes.EpisodeService"' in (site / "reference" / "episodes" / "index.html").read_text()
    integrations = (site / "reference" / "integrations" / "index.html").read_text()
    assert 'id="gym_ray.integrations.trl.GymRayRollouts"' in integrations
    assert 'id="gym_ray.integrations.verl.GymRayAgentLoop"' in integrations


def test_broken_link_anchor_or_missing_page_fails_the_build(tmp_path, caplog):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "broken.md").write_text("# Broken\n\n[gone](../gym_ray/nowhere/README.md), "
                                    "[no such heading](../README.md#no-such-heading)\n")
    nav = [*load_config(config_file=str(ROOT / "mkdocs.yml")).nav, "broken.md", "missing.md"]
    with caplog.at_level(logging.WARNING, logger="mkdocs"), pytest.raises(Abort):
        _build(tmp_path / "site", docs_dir=str(docs), nav=nav)
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "gym_ray/nowhere/README.md" in warnings
    assert "no-such-heading" in warnings
    assert "missing.md" in warnings


def _tutorial_commands() -> list[tuple[str, list[str]]]:
    """Each `gym-ray ...` command in the tutorial's bash blocks: (page, its arguments)."""
    commands = []
    for page in sorted((ROOT / "docs" / "tutorial").glob("*.md")):
        blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
        for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            starts = [i for i, w in enumerate(words) if w.endswith("gym-ray")]
            commands += [(page.name, words[i + 1:]) for i in starts]
    return commands


@pytest.mark.parametrize("page,argv", _tutorial_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_tutorial_commands_exist(page, argv):
    """The tutorial's commands are the CLI's: each parses, and the shipped files it names are there."""
    parse_args(argv)
    named = [a.split("=")[-1] for a in argv if re.search(r"\.(yaml|jsonl)$", a) and "my_env" not in a]
    assert [f for f in named if not f.startswith("$") and not (ROOT / f).is_file()] == [], page
