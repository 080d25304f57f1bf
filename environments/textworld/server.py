"""TextWorld: the row's game (challenge, settings, seed), generated once by TextWorld's own challenge
generator and cached (see `games.py`), played in jericho's z-machine, one game per episode. The action text
goes to the game; its own score over its max score is the reward, its won/lost flags end the episode."""

from __future__ import annotations

import asyncio
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import jericho
from gym_ray_env_textworld.games import CHALLENGES, ensure_game, parse_settings

import textworld
from gym_ray import ResourceServer, StepResult
from gym_ray.types import Message, Task, VerifyResult

# The rows' games: each challenge with the settings (difficulty) `tw-make <challenge>` takes.
GAMES: dict[str, dict[str, Any]] = {
    "tw-cooking": {"recipe": 1, "take": 1, "go": 6, "open": True, "cook": True, "cut": True},
    "tw-coin_collector": {"level": 5},
    "tw-treasure_hunter": {"level": 5},
    "tw-simple": {"rewards": "dense", "goal": "detailed"},
}
# Folds: their own seed ranges, and the challenge's own held-out content where it has some (tw-cooking's
# food / preparation split, tw-simple's test distribution).
FOLD_SEEDS = {"train": 0, "dev": 10000, "test": 20000}
FOLD_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "tw-cooking": {"train": {"split": "train"}, "dev": {"split": "valid"}, "test": {"split": "test"}},
    "tw-simple": {"train": {"test": False}, "dev": {"test": True}, "test": {"test": True}},
}
SYSTEM = ("You are playing a text adventure game. Each turn, reply with exactly one command (e.g. `look`, "
          "`go north`, `open door`, `take coin`, `examine cookbook`, `inventory`), and nothing else.")
# Interpreter commands that leave the game (or wait for a yes/no the wrapper cannot follow): not sent.
META = {"quit", "q", "restart", "save", "restore", "undo", "script", "unscript", "transcript", "noscript"}
MAX_COMMAND_CHARS = 200
INFOS = textworld.EnvInfos(score=True, max_score=True, won=True, lost=True, moves=True)
INFOS_WITH_COMMANDS = textworld.EnvInfos(score=True, max_score=True, won=True, lost=True, moves=True,
                                         admissible_commands=True)

# TextWorld's game loading (its logic parser, tatsu) breaks when two threads load at once, so every call into
# textworld here holds this lock; a load takes a fraction of a second, a step milliseconds.
_TEXTWORLD = threading.Lock()
# jericho knows no TextWorld game's score location; TextWorld reads score, won and lost from the game itself.
warnings.filterwarnings("ignore", category=jericho.UnsupportedGameWarning)

_PROMPT = re.compile(r"^>.*$", re.M)  # the interpreter's prompt and status line (`>   -= Kitchen =-3/10`)
_BANNER = re.compile(r"^(?=.*[_|$\\/].*[_|$\\/].*[_|$\\/])[ _|$\\/>]+$", re.M)  # the TextWorld title art
_END = re.compile(r"^Would you like to RESTART.*$", re.M)  # after *** The End ***: the episode is over


def clean(text: str) -> str:
    """Game output without the title art, the prompt and the status line, blank runs squeezed."""
    text = _END.sub("", _BANNER.sub("", _PROMPT.sub("", text)))
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()


def command(action: str) -> str:
    """The model's reply as one game command: one line (the z-machine would queue a second one), capped."""
    return " ".join(action.split())[:MAX_COMMAND_CHARS]


def row_game(task: Task) -> tuple[str, dict[str, Any], int]:
    """(challenge, settings, seed) of a row, or a ValueError naming what is wrong."""
    meta = task.verifier_metadata
    missing = [k for k in ("challenge", "seed") if k not in meta]
    if missing:
        raise ValueError(f"task {task.task_id}: verifier_metadata needs {', '.join(missing)}")
    if meta["challenge"] not in CHALLENGES:
        raise ValueError(f"task {task.task_id}: unknown challenge {meta['challenge']!r} (one of {', '.join(CHALLENGES)})")
    try:
        return meta["challenge"], parse_settings(meta.get("settings")), int(meta["seed"])
    except ValueError as e:
        raise ValueError(f"task {task.task_id}: {e}") from e


class TextWorld(ResourceServer):
    verifier = ("the game's own score / max score (0-1), success its won flag (the `won` component); "
                "won/lost end the episode")
    origin = "textworld==1.7.0 (MIT; games made by its generator), played in jericho==3.3.1 (GPL-2.0+)"
    metric = "mean_reward"

    def __init__(self, step_limit: int = 100, cache_dir: str | None = None, list_commands: bool = False) -> None:
        if step_limit < 1:
            raise ValueError(f"step_limit {step_limit}: must be at least 1")
        self.step_limit = step_limit
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.list_commands = list_commands

    def _observe(self, text: str, state: Any) -> str:
        text = clean(text)
        if self.list_commands and state.admissible_commands:
            text += "\n\nAvailable commands: " + ", ".join(state.admissible_commands)
        return text

    def _reset(self, task: Task) -> str:
        challenge, settings, seed = row_game(task)
        try:
            path = ensure_game(challenge, settings, seed, self.cache_dir)
        except ValueError as e:
            raise ValueError(f"task {task.task_id}: {e}") from e
        with _TEXTWORLD:
            env = textworld.start(str(path), request_infos=INFOS_WITH_COMMANDS if self.list_commands else INFOS)
            self.state = {"env": env, "score": 0, "paid": 0.0, "moves": 0, "steps": 0, "max_score": None,
                          "won": False, "lost": False}
            state = env.reset()
        if not state.max_score:
            raise ValueError(f"task {task.task_id}: the game has no score to win ({path})")
        self.state["max_score"] = state.max_score
        return self._observe(state.feedback, state)

    def _step(self, action: str) -> StepResult:
        st = self.state
        st["steps"] += 1
        won, lost = False, False
        cmd = command(action)
        if cmd.split(" ")[0].lower() in META:
            observation = f"`{cmd}` is not available in this game."
        else:
            with _TEXTWORLD:
                state, _, _ = st["env"].step(cmd)
            st["score"], st["moves"], won, lost = state.score, state.moves, bool(state.won), bool(state.lost)
            st["won"], st["lost"] = won, lost
            observation = self._observe(state.feedback, state)
        done = won or lost or st["steps"] >= self.step_limit
        # What the score now stands at (0-1) less what earlier steps paid: the step rewards sum to it exactly.
        reward = st["score"] / st["max_score"] - st["paid"]
        st["paid"] += reward
        return StepResult(observation=observation, reward=reward, done=done,
                          info={"score": st["score"], "max_score": st["max_score"], "moves": st["moves"],
                                "steps": st["steps"], "won": won, "lost": lost})

    def verify(self, task: Task, messages: list[Message]) -> VerifyResult:
        """The benchmark's two numbers for the episode: its normalized score (the reward) and whether it was won
        (the `won` component, whose mean is the success rate). Used with the agent's `kwargs: {verify: true}`."""
        st: dict[str, Any] = self.state or {}
        if not st.get("max_score"):
            return VerifyResult(reward=0.0, components={"score": 0.0, "won": 0.0},
                                info={"reason": "the game did not start"})
        score = st["score"] / st["max_score"]
        return VerifyResult(reward=score, components={"score": score, "won": float(st["won"])},
                            info={k: st[k] for k in ("score", "max_score", "moves", "steps", "won", "lost")})

    # Generation (a child process, seconds) and the interpreter run off the event loop, with the episode bound.
    async def reset(self, task: Task) -> str:
        return await asyncio.to_thread(self._reset, task)

    async def step(self, action: str) -> StepResult:
        return await asyncio.to_thread(self._step, action)

    def close(self) -> None:
        state: dict[str, Any] = self.state or {}
        env = state.pop("env", None)
        if env is not None:
            with _TEXTWORLD:
                env.close()  # frees the interpreter; its private copy of libfrotz is unloaded with the object
