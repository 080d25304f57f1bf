"""An OpenEnv server (openenv-core's own `create_app`, served by uvicorn, driven over its `/ws` sessions by
openenv-core's `GenericEnvClient`) as a gym_ray step environment: a scripted policy plays it through the
env-step agent on Ray into Parquet that passes the row checks, per-step rewards kept; wrong and rejected
actions; a server the env starts from an Environment class; bad config; a server that is gone."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import sys
from uuid import uuid4

import pytest
import ray
from openenv.core.env_server import Action, Environment, Observation, State, create_app
from test_textarena import collect

from gym_ray.config import EnvConfig
from gym_ray.integrations.openenv import _Server
from gym_ray.resources import EnvError
from gym_ray.resources.client import make_env_client
from gym_ray.types import Message, Task

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the script reaches the agent actors by value

WORDS = ["apple", "river", "cloud", "stone", "ember", "maple", "tiger", "lemon"]


class SayAction(Action):
    message: str


class SayObservation(Observation):
    prompt: str
    step: int = 0


class SayWords(Environment[SayAction, SayObservation, State]):
    """Three words per episode (fixed by the seed): saying the asked word scores 1/3, anything else 0."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self._state = State(episode_id=str(uuid4()))
        self.words: list[str] = []

    def reset(self, seed=None, episode_id=None, **kwargs) -> SayObservation:
        self._state = State(episode_id=episode_id or str(uuid4()))
        self.words = random.Random(seed).sample(WORDS, 3)
        return SayObservation(prompt=f"Say '{self.words[0]}'.", reward=0.0)

    def step(self, action: SayAction, timeout_s=None, **kwargs) -> SayObservation:
        n = self._state.step_count
        self._state.step_count += 1
        right = action.message == self.words[n]
        done = n + 1 == len(self.words)
        verdict = "Right." if right else f"Wrong, it was '{self.words[n]}'."
        prompt = verdict + ("" if done else f" Say '{self.words[n + 1]}'.")
        return SayObservation(prompt=prompt, step=n + 1, reward=1 / 3 if right else 0.0, done=done)

    @property
    def state(self) -> State:
        return self._state


class AddAction(Action):
    a: int
    b: int


class SumObservation(Observation):
    total: int = 0


class Adder(Environment[AddAction, SumObservation, State]):
    """One step: the sum of the action's two ints; an Action without a string field (text as JSON)."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def reset(self, seed=None, episode_id=None, **kwargs) -> SumObservation:
        return SumObservation()

    def step(self, action: AddAction, timeout_s=None, **kwargs) -> SumObservation:
        return SumObservation(total=action.a + action.b, reward=float(action.a + action.b == 5), done=True)

    @property
    def state(self) -> State:
        return State()


def say_reply(prompt_text: str, turn: int) -> str:
    return re.findall(r"Say '(\w+)'", prompt_text)[-1]


@pytest.fixture(scope="module")
def server():
    """A real OpenEnv server for the module: OpenEnv's `create_app` on a free port."""
    srv = _Server(create_app(SayWords, SayAction, SayObservation, max_concurrent_envs=64), timeout_s=30)
    yield srv.url
    srv.stop()


def _task(seed: int) -> Task:
    return Task(task_id=f"t{seed}", env="say", prompt=[Message(role="user", content="play")],
                verifier_metadata={"seed": seed})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config_dir(tmp_path, urls: dict[str, str]):
    """A run config + tasks for the collector (the textarena tests' `collect` reads <dir>/config.yaml):
    one env per url, four seeds each."""
    tmp_path.mkdir()
    envs = ""
    for name, url in urls.items():
        rows = [{"task_id": f"{name}-{s}", "env": name, "verifier_metadata": {"seed": s},
                 "prompt": [{"role": "system", "content": "Each turn, reply with exactly the word you are asked."}]}
                for s in range(4)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        envs += f"""
  {name}:
    server: gym_ray.integrations.openenv:OpenEnvEnv
    data: [{name}.jsonl]
    config: {{url: "{url}", timeout_s: 10}}
    hosting: local
    agent: {{cls: gym_ray.agents.env_step:EnvStepAgent, max_turns: 6, max_total_tokens: 2048}}"""
    (tmp_path / "config.yaml").write_text(f"""envs:{envs}
collect: {{output_dir: out, sampling: {{temperature: 1.0, max_tokens: 16}}}}
""")
    return tmp_path


def test_openenv_server_plays_into_parquet_with_per_step_rewards(ray_cluster, server, tmp_path):
    """One collection (a Ray start costs ~30 s on the loaded box): the live server's episodes, and those of
    an env whose url nobody listens on, which are env_error rows, never a reward."""
    gone = f"http://127.0.0.1:{_free_port()}"
    cfg_dir = _config_dir(tmp_path / "cfg", {"say_words": server, "say_gone": gone})
    cfg, summary, rows = collect(str(cfg_dir), say_reply, tmp_path / "out")
    assert cfg.envs["say_words"].server == "gym_ray.integrations.openenv:OpenEnvEnv"
    assert len(rows) == summary["overall"]["rollouts"] == 16
    played = [r for r in rows if r.env == "say_words"]
    assert len(played) == 8 and {r.status.value for r in played} == {"ok"}
    for r in played:
        r.check_invariants()
        assert r.turn_rewards == [pytest.approx(1 / 3)] * 3 and r.reward == pytest.approx(1.0)
        assert r.num_turns == 3 and not r.truncated
        assert json.loads(r.metrics_json)["stop_reason"] == "done"
        seed = json.loads(r.task_json)["verifier_metadata"]["seed"]
        users = [m["content"] for m in json.loads(r.messages_json) if m["role"] == "user"]
        # the observation is the server's (two fields: JSON), the episode the seed's words
        assert json.loads(users[0]) == {"prompt": f"Say '{random.Random(seed).sample(WORDS, 3)[0]}'.", "step": 0}
    unreachable = [r for r in rows if r.env == "say_gone"]
    assert len(unreachable) == 8 and {r.status.value for r in unreachable} == {"env_error"}
    assert all(r.mask_sample and gone.split("//")[1] in r.error for r in unreachable)


def test_openenv_wrong_and_rejected_actions_score_less(server):
    env = make_env_client("say", EnvConfig(server="gym_ray.integrations.openenv:OpenEnvEnv", config={"url": server}))
    words = random.Random(4).sample(WORDS, 3)

    async def play(actions, session):
        await env.reset(session, _task(4))
        steps = [await env.step(session, a) for a in actions]
        return steps, await env.verify(session, _task(4), [])

    wrong, lost = asyncio.run(play(["no", "no", "no"], "w"))
    assert [s.reward for s in wrong] == [0.0] * 3 and wrong[-1].done and lost.reward == 0.0
    assert [f"it was '{w}'" in s.observation for w, s in zip(words, wrong, strict=True)] == [True] * 3
    mixed, partial = asyncio.run(play([words[0], "no", words[2]], "m"))
    assert [s.reward for s in mixed] == [pytest.approx(1 / 3), 0.0, pytest.approx(1 / 3)]
    assert partial.reward == pytest.approx(2 / 3) and partial.reward < 1.0

    # a field the server's Action type does not have: OpenEnv's validation rejects it, the episode ends at 0
    odd = make_env_client("odd", EnvConfig(server="gym_ray.integrations.openenv:OpenEnvEnv",
                                           config={"url": server, "action_field": "msg"}))

    async def rejected():
        await odd.reset("r", _task(4))
        return await odd.step("r", words[0]), await odd.verify("r", _task(4), [])

    step, verdict = asyncio.run(rejected())
    assert step.done and step.reward == 0.0 and verdict.reward == 0.0
    assert "malformed action" in verdict.info["reason"] and "VALIDATION_ERROR" in verdict.info["reason"]


def test_openenv_server_started_from_an_environment_class():
    env = make_env_client("own", EnvConfig(server="gym_ray.integrations.openenv:OpenEnvEnv",
                                           config={"env": f"{__name__}:SayWords", "observation_field": "prompt"}))

    async def go():
        first = await env.reset("s", _task(2))
        steps = []
        while not steps or not steps[-1].done:
            steps.append(await env.step("s", say_reply(first if not steps else steps[-1].observation, 0)))
        return first, steps, await env.verify("s", _task(2), [])

    first, steps, verdict = asyncio.run(go())
    assert first == f"Say '{random.Random(2).sample(WORDS, 3)[0]}'."  # observation_field: the text itself
    assert len(steps) == 3 and verdict.reward == pytest.approx(1.0)


def test_an_action_without_a_string_field_is_the_text_as_json():
    env = make_env_client("add", EnvConfig(server="gym_ray.integrations.openenv:OpenEnvEnv",
                                           config={"env": f"{__name__}:Adder"}))

    async def one(session, text):
        first = await env.reset(session, _task(0))
        return first, await env.step(session, text)

    first, good = asyncio.run(one("a", 'Adding: {"a": 2, "b": 3}'))
    assert first == "0" and good.observation == "5" and good.reward == 1.0 and good.done
    for text, reason in [("five", "no JSON object"), ('{"a": "x", "b": 1}', "the server rejected the action")]:
        _, bad = asyncio.run(one(text, text))
        assert bad.done and bad.reward == 0.0 and bad.info["reason"].startswith(f"malformed action: {reason}")


@pytest.mark.parametrize(("config", "message"), [
    ({}, "config: OpenEnvEnv needs exactly one of config.url"),
    ({"url": "localhost:8000"}, "config.url: 'localhost:8000' is not an http(s):// or ws(s):// URL"),
    ({"env": f"{__name__}:NoSuchEnv"}, f"config.env: cannot import '{__name__}:NoSuchEnv'"),
    ({"env": f"{__name__}:SayAction"}, "config.env: 'test_openenv:SayAction' is not an OpenEnv Environment"),
])
def test_a_bad_openenv_config_is_a_one_line_error(config, message):
    env = make_env_client("x", EnvConfig(server="gym_ray.integrations.openenv:OpenEnvEnv", config=config))
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        asyncio.run(env.tools())
    assert "\n" not in str(err.value)


def test_a_server_that_goes_away_mid_episode_is_an_env_error():
    srv = _Server(create_app(SayWords, SayAction, SayObservation, max_concurrent_envs=4), timeout_s=30)
    env = make_env_client("gone", EnvConfig(server="gym_ray.integrations.openenv:OpenEnvEnv",
                                            config={"url": srv.url, "timeout_s": 5}))

    async def go():
        await env.reset("g", _task(1))
        srv.stop()
        with pytest.raises(EnvError, match="step failed: ConnectionClosed"):
            await env.step("g", "apple")

    asyncio.run(go())
