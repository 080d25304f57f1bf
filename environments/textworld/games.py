"""TextWorld games made on demand: a row's (challenge, settings, seed) names one game, generated once with
TextWorld's own challenge generator (what `tw-make <challenge> --seed <seed>` runs) and kept in a cache.

The generator runs in a child process with `PYTHONHASHSEED=0`, so the same row gives the same game, byte for
byte, on any machine (with the hash seed left random, set ordering changes some games' text). A file lock
lets concurrent episodes of one row share one generation. `python -m gym_ray_env_textworld.games
<challenge> '<settings json>' <seed> <out.z8>` is that child.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TEXTWORLD_VERSION = "1.7.0"
CHALLENGES = ("tw-cooking", "tw-coin_collector", "tw-treasure_hunter", "tw-simple")
GENERATE_TIMEOUT_S = 600.0


def default_cache_dir() -> Path:
    root = os.environ.get("GYM_RAY_TEXTWORLD_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gym_ray" / "textworld"


def parse_settings(settings: Any) -> dict[str, Any]:
    """A row's settings: a JSON object, as a string (the parquet rows) or a dict."""
    if settings is None or settings == "":
        return {}
    if isinstance(settings, str):
        settings = json.loads(settings)
    if not isinstance(settings, dict):
        raise ValueError(f"settings {settings!r}: expected a JSON object")
    return dict(settings)


def full_settings(challenge: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The challenge's own defaults (its `tw-make` arguments) under the row's settings; a missing required
    setting or an unknown one is an error."""
    from textworld.challenges import CHALLENGES as REGISTERED

    if challenge not in REGISTERED:
        raise ValueError(f"unknown challenge {challenge!r}: one of {', '.join(sorted(REGISTERED))}")
    parser = argparse.ArgumentParser(add_help=False)
    REGISTERED[challenge][2](parser)
    actions = {a.dest: a for a in parser._actions}
    unknown = sorted(set(settings) - set(actions))
    if unknown:
        raise ValueError(f"{challenge}: unknown settings {', '.join(unknown)} (known: {', '.join(sorted(actions))})")
    missing = sorted(k for k, a in actions.items() if a.required and k not in settings)
    if missing:
        raise ValueError(f"{challenge}: settings need {', '.join(missing)}")
    return {**{k: a.default for k, a in actions.items()}, **settings}


def game_path(challenge: str, settings: dict[str, Any], seed: int, cache_dir: Path | None = None) -> Path:
    """Where the row's game lives: `<cache>/<challenge>/<settings hash>/<seed>.z8` (and its `.json`)."""
    key = json.dumps({"textworld": TEXTWORLD_VERSION, "settings": full_settings(challenge, settings)},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir or default_cache_dir()) / challenge / digest / f"{int(seed)}.z8"


def ensure_game(challenge: str, settings: dict[str, Any], seed: int, cache_dir: Path | None = None) -> Path:
    """The row's game file, generated first when the cache lacks it."""
    path = game_path(challenge, settings, seed, cache_dir)
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another episode may be making this very game
        if not path.is_file():
            _generate(challenge, full_settings(challenge, settings), int(seed), path)
    return path


def _generate(challenge: str, settings: dict[str, Any], seed: int, path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as tmp:
        out = Path(tmp) / path.name
        cmd = [sys.executable, "-m", "gym_ray_env_textworld.games", challenge, json.dumps(settings), str(seed),
               str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S,
                                  env={**os.environ, "PYTHONHASHSEED": "0"})
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{challenge} seed {seed}: generation ran past {GENERATE_TIMEOUT_S:.0f} s") from e
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{challenge} seed {seed} {json.dumps(settings)}: generation failed "
                               f"(exit {proc.returncode}): {' | '.join(tail)}")
        # The .json first: a .z8 in place means its game is whole.
        os.replace(out.with_suffix(".json"), path.with_suffix(".json"))
        os.replace(out, path)


def walkthrough(path: Path) -> list[str]:
    """The generator's own winning command sequence for a game (its metadata's `walkthrough`)."""
    return list(json.loads(Path(path).with_suffix(".json").read_text())["metadata"]["walkthrough"])


def make(challenge: str, settings: dict[str, Any], seed: int, out: Path) -> None:
    """Generate and compile one game (the child process's work): as `tw-make` does."""
    import textworld
    import textworld.challenges
    from textworld.challenges import CHALLENGES as REGISTERED

    options = textworld.GameOptions()
    options.seeds = seed
    options.path = str(out)
    options.file_ext = ".z8"
    options.force_recompile = True
    game = REGISTERED[challenge][1](settings=settings, options=options)
    textworld.generator.compile_game(game, options)
    with contextlib.suppress(FileNotFoundError):
        out.with_suffix(".ni").unlink()  # the Inform 7 source: not needed to play


if __name__ == "__main__":
    name, settings_json, seed_text, out_path = sys.argv[1:5]
    make(name, json.loads(settings_json), int(seed_text), Path(out_path))
