"""Tiny environments for re-verification and replay, with the scripts that play them.

`MagicWords`: find a key's word with a (cacheable, deterministic) lookup and say it. Its lax verifier also
accepts the magic string "MAGIC_PASS" (a planted hack); `strict: true` is the corrected verifier. Its stamp
tool is not cacheable and answers differently each call. `Ledger`: a stateful tally whose verify reads the
state the episode's `add` calls built; `NoisyLedger` stamps each `add` with a receipt number, so a replay of
the same calls answers differently. `OneStep`: a step-driven game, scored on its live session.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path

from gym_ray import ResourceServer, StepResult, Task, tool
from gym_ray.collect.sink import ParquetSink
from gym_ray.config import ModelConfig, validate_config
from gym_ray.episodes import EpisodeService, Group
from gym_ray.models.client import make_policy_client
from gym_ray.rundir import RunDir
from gym_ray.rundir.location import CONFIG
from gym_ray.types import rollouts_to_arrow

WORDS = {"K0": "apple", "K1": "river", "K2": "stone", "K3": "cloud", "K4": "ember", "K5": "maple"}
MAGIC = "MAGIC_PASS"
_KEY = re.compile(r"Find the word for (K\d)\.")
_WORD = re.compile(r"WORD:(\w+)")
_ADDS = re.compile(r"Add ([\d, ]+) to the ledger\.")
_stamps = itertools.count()
ENVS = {"magic": {"server": "replay_envs:MagicWords", "hosting": "local"},
        "ledger": {"server": "replay_envs:Ledger", "hosting": "local"},
        "noisy": {"server": "replay_envs:NoisyLedger", "hosting": "local"},
        "steps": {"server": "replay_envs:OneStep", "hosting": "local"}}


class MagicWords(ResourceServer):
    """Scores an answer that names the task's word (the lax verifier also takes the magic string)."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    @tool(cacheable=True)
    def lookup(self, key: str) -> str:
        """The word stored under a key.

        Args:
            key: which key
        """
        return f"WORD:{WORDS.get(key, 'none')}"

    @tool
    def stamp(self) -> str:
        """A fresh stamp."""
        return f"stamp {next(_stamps)}"

    def score(self, task: Task, answer: str) -> float:
        if not self.strict and MAGIC in answer:
            return 1.0
        return float(task.verifier_metadata["word"] in answer)


class Ledger(ResourceServer):
    """A tally the episode's `add` calls build; verify reads it (live state)."""

    def seed(self, task: Task) -> dict:
        return {"total": 0}

    @tool
    def add(self, n: int) -> str:
        """Add to the tally.

        Args:
            n: how much
        """
        self.state["total"] += n
        return f"total {self.state['total']}"

    def verify(self, task, messages) -> float:
        return float(self.state["total"] == task.verifier_metadata["target"])


class NoisyLedger(Ledger):
    """The same tally, each answer stamped with a receipt number that differs every time it is made."""

    @tool
    def add(self, n: int) -> str:
        """Add to the tally.

        Args:
            n: how much
        """
        self.state["total"] += n
        return f"total {self.state['total']} (receipt {next(_stamps)})"


class OneStep(ResourceServer):
    """A one-step game: its reward is the step's, which only the live session keeps."""

    def reset(self, task: Task) -> str:
        return "Say go."

    def step(self, action: str) -> StepResult:
        return StepResult(observation="done", reward=float(action == "go"), done=True)


def step_task(i: int) -> Task:
    return Task(task_id=f"s{i}", env="steps", prompt=[{"role": "user", "content": "A one-step game."}])


def word_task(i: int, key: str) -> Task:
    return Task(task_id=f"w{i}", env="magic", prompt=[{"role": "user", "content": f"Find the word for {key}."}],
                verifier_metadata={"word": WORDS[key]})


def ledger_task(i: int, env: str, adds: list[int]) -> Task:
    text = f"Add {', '.join(map(str, adds))} to the ledger."
    return Task(task_id=f"l{i}", env=env, prompt=[{"role": "user", "content": text}],
                verifier_metadata={"target": sum(adds)})


def magic_reply(prompt_text: str, turn: int):
    """Look the key up (and take a stamp), then answer; keys K1, K3, K5 get the magic string instead."""
    key = _KEY.findall(prompt_text)[0]
    if turn == 0:
        lookup = json.dumps({"name": "lookup", "arguments": {"key": key}})
        stamp = json.dumps({"name": "stamp", "arguments": {}})
        return f"<tool_call>\n{lookup}\n</tool_call>\n<tool_call>\n{stamp}\n</tool_call>"
    if int(key[1]) % 2:
        return MAGIC
    return f"The word is {_WORD.findall(prompt_text)[-1]}."


def ledger_reply(prompt_text: str, turn: int):
    """One `add` per number of the task, then done."""
    adds = [int(x) for x in _ADDS.findall(prompt_text)[0].split(",")]
    if turn < len(adds):
        return {"name": "add", "arguments": {"n": adds[turn]}}
    return "Done."


def reply(prompt_text: str, turn: int):
    """The script of every env here, by its task's words."""
    if "Say go." in prompt_text:
        return "go"
    return magic_reply(prompt_text, turn) if _KEY.search(prompt_text) else ledger_reply(prompt_text, turn)


def run_config(envs: dict) -> dict:
    return {"model": {"kind": "scripted", "hosting": "local", "script": "replay_envs:reply",
                      "chat_template": "chatml_tools"}, "envs": envs}


def scripted_policy():
    return make_policy_client(ModelConfig(kind="scripted", hosting="local", script="replay_envs:reply",
                                          chat_template="chatml_tools"), app_name="policy")


def play(policy, out: Path, tasks: list[Task], envs: dict = ENVS, group_size: int = 2) -> Path:
    """A run directory as `gym-ray run` leaves it (rows in whole groups, the config), played in-process."""
    cfg = validate_config(run_config(envs))
    service = EpisodeService.from_config(cfg, policy=policy)

    async def go():
        return await asyncio.gather(*(service.run_group(t, Group(f"g{i}", group_size)) for i, t in enumerate(tasks)))

    sink = ParquetSink(out)
    for rows in asyncio.run(go()):
        sink.write(rollouts_to_arrow(rows))
    sink.close()
    run = RunDir.of(out)
    run.write_bytes(run.meta(CONFIG), cfg.model_dump_json().encode())
    return out
