"""dialogue: the env-step agent talks to a simulated user (a second scripted policy that answers from its
hidden profile through the `chat` call); an assistant that asks for each detail and books them scores
1.0 with every field right, a wrong field or no booking scores 0; a failing user is an env_error."""

from __future__ import annotations

import asyncio
import json
import re

from env_helpers import ENVIRONMENTS
from fault_helpers import ScriptClient
from gym_ray_env_dialogue.server import FIELDS, Dialogue

from gym_ray.agents.base import EpisodeContext, load_tokenizer
from gym_ray.agents.env_step import EnvStepAgent
from gym_ray.config import ModelConfig, SamplingConfig, load_config
from gym_ray.resources.runtime import EnvRuntime
from gym_ray.tasks import load_tasks

QUESTIONS = {"name": "What name should the booking be under?", "party_size": "How many people will come?",
             "day": "Which day would you like?", "time": "At what time?"}
_TURN = re.compile(r"<\|im_start\|>(user|assistant)\n(.*?)<\|im_end\|>", re.S)


def customer(prompt_text: str, turn: int) -> str:
    """The simulated user: answers the last question from the profile in its system prompt."""
    profile = re.search(r"name (\w+); party of (\d+); on (\w+); at ([\d:]+)\.", prompt_text).groups()
    asked = _TURN.findall(prompt_text)[-1][1]  # the assistant's words reach the user as a user turn
    for field, value in zip(FIELDS, profile, strict=True):
        if asked == QUESTIONS[field]:
            return {"name": f"It's {value}.", "party_size": f"We are {value}.", "day": f"On {value}, please.",
                    "time": f"At {value}."}[field]
    return "Thank you!"


def assistant(wrong_day: bool = False, never_book: bool = False):
    """The policy under training, scripted: ask each question in turn, then book what the user said."""
    def reply(prompt_text: str, turn: int) -> str:
        if never_book:
            return "Could you repeat that?"
        if turn < len(FIELDS):
            return QUESTIONS[FIELDS[turn]]
        users = [text for role, text in _TURN.findall(prompt_text) if role == "user"][1:]
        name, size, day, time = (re.search(p, u).group(1) for p, u in zip(
            (r"It's (\w+)", r"We are (\d+)", r"On (\w+)", r"At ([\d:]+)"), users, strict=False))
        booking = {"name": name, "party_size": int(size), "day": "Someday" if wrong_day else day, "time": time}
        return f"Booked! <booking>{json.dumps(booking)}</booking>"
    return reply


def run(default_model_path, policy_fn, user_fn=customer, limit=None):
    run_cfg = load_config(ENVIRONMENTS / "dialogue" / "config.yaml")
    env_cfg = run_cfg.envs["dialogue"]
    tasks = load_tasks(env_cfg.data)[:limit]
    model = ModelConfig(kind="scripted", name="scripted", replies=["unused"], chat_template="chatml_tools")
    user = ScriptClient(model, default_model_path, user_fn)
    env = EnvRuntime(Dialogue(client=user, **{k: v for k, v in env_cfg.config.items() if k not in ("user", "user_app")}))
    chat = load_tokenizer(default_model_path, "chatml_tools")
    policy = ScriptClient(model, default_model_path, policy_fn)
    agent = EnvStepAgent(env_cfg.agent)

    async def episode(i, task):
        ctx = EpisodeContext(policy=policy, env=env, tokenizer=chat, sampling=SamplingConfig(max_tokens=128),
                             config=env_cfg.agent, rollout_id=f"r{i}", group_id=f"g{i}", rollout_index=0,
                             group_size=1, session_id=f"s{i}")
        return await agent.run(task, ctx)

    async def main():
        return await asyncio.gather(*(episode(i, t) for i, t in enumerate(tasks)))

    return tasks, [rows for rows in asyncio.run(main())]


def test_asking_and_booking_what_the_user_said_scores_one(default_model_path):
    tasks, results = run(default_model_path, assistant())
    assert len(tasks) == 12
    for task, [row] in zip(tasks, results, strict=True):
        row.check_invariants()
        assert row.status == "ok", row.error
        assert row.reward == 1.0 and row.num_turns == 5 and not row.truncated
        assert dict(zip(row.reward_component_names, row.reward_component_values, strict=True)) == dict.fromkeys(FIELDS, 1.0)
        messages = json.loads(row.messages_json)
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert users[0] == task.verifier_metadata["opening"]
        assert users[1] == f"It's {task.verifier_metadata['profile']['name']}."  # the simulated user's own words
        assert json.loads(row.metrics_json)["verify_info"]["booking"]["day"] == task.verifier_metadata["profile"]["day"]


def test_a_wrong_field_or_no_booking_scores_zero(default_model_path):
    _, wrong = run(default_model_path, assistant(wrong_day=True), limit=3)
    for [row] in wrong:
        components = dict(zip(row.reward_component_names, row.reward_component_values, strict=True))
        assert row.reward == 0.0 and components == {"name": 1.0, "party_size": 1.0, "day": 0.0, "time": 1.0}
    _, silent = run(default_model_path, assistant(never_book=True), limit=2)
    for [row] in silent:
        assert row.status == "ok" and row.reward == 0.0
        assert "no booking" in json.loads(row.metrics_json)["verify_info"]["reason"]


def test_a_failing_simulated_user_is_an_env_error(default_model_path):
    def broken(prompt_text, turn):
        raise RuntimeError("user model down")

    _, results = run(default_model_path, assistant(), user_fn=broken, limit=1)
    [[row]] = results
    assert row.status == "env_error" and row.mask_sample and "simulated user" in row.error
