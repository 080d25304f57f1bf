"""dialogue: a multi-turn conversation with a simulated user (tau-bench style): the model is a
restaurant's booking assistant, a second policy plays the customer from a hidden profile, and the booking
the model finally writes is checked field by field against that profile.

The user is a model of the run (`config.user` its ModelConfig, `${model}` for the policy's own
deployment, `config.user_app` its Serve app), reached through its `chat` call; it sees its profile as a
system prompt and the conversation with the roles swapped. Driven by the env-step agent: each model turn
is one step; a `<booking>{...}</booking>` ends the episode.
"""

from __future__ import annotations

import json

from gym_ray import EnvError, Message, ResourceServer, StepResult, VerifyResult, extract_tag
from gym_ray.clients import PolicyClient
from gym_ray.config import ModelConfig, SamplingConfig

FIELDS = ("name", "party_size", "day", "time")
USER_PROMPT = (
    "You are a customer phoning a restaurant to book a table. Your booking: name {name}; party of "
    "{party_size}; on {day}; at {time}. Answer the assistant's questions briefly and truthfully, only what "
    "is asked, and never invent other details. Once the assistant confirms the booking, say thank you."
)


def booking_from(text: str) -> dict | None:
    body = extract_tag(text, "booking")
    if body is None:
        return None
    try:
        booking = json.loads(body)
    except ValueError:
        return {}
    return booking if isinstance(booking, dict) else {}


def same(field: str, got, want) -> bool:
    if field == "party_size":
        try:
            return int(got) == int(want)
        except (TypeError, ValueError):
            return False
    return str(got).strip().lower() == str(want).strip().lower()


class Dialogue(ResourceServer):
    verifier = "the booking's fields against the user's hidden profile"
    origin = "native (tau-bench style; the user is a second policy)"

    def __init__(self, user: dict | None = None, user_app: str | None = None, sampling: dict | None = None,
                 max_user_turns: int = 8, client: PolicyClient | None = None) -> None:
        if client is None:
            if user is None:
                raise ValueError("config.user: name the user model, e.g. `user: ${model}` or `user: ${models.user}`")
            from gym_ray.models import make_policy_client

            cfg = ModelConfig.model_validate(user)
            client = make_policy_client(cfg, user_app or cfg.name)
        self.client = client
        self.sampling = SamplingConfig.model_validate({"temperature": 0.7, "max_tokens": 64, **(sampling or {})})
        self.max_user_turns = max_user_turns

    def reset(self, task):
        opening = task.verifier_metadata["opening"]
        self.state = {"history": [Message(role="user", content=opening)], "result": None}
        return opening

    async def _user_reply(self, profile: dict) -> str:
        swapped = {"user": "assistant", "assistant": "user"}
        messages = [Message(role="system", content=USER_PROMPT.format(**profile)),
                    *(Message(role=swapped[m.role], content=m.content) for m in self.state["history"])]
        try:
            completion = await self.client.chat(messages, None, self.sampling)
            return (completion["choices"][0]["message"]["content"] or "").strip()
        except Exception as e:  # the simulated user failed, not the model under training
            raise EnvError(f"simulated user: {type(e).__name__}: {e}") from e

    async def step(self, action):
        profile = self.task.verifier_metadata["profile"]
        self.state["history"].append(Message(role="assistant", content=action))
        booking = booking_from(action)
        if booking is not None:
            components = {f: float(same(f, booking.get(f), profile[f])) for f in FIELDS}
            reward = float(all(components.values()))
            self.state["result"] = VerifyResult(reward=reward, components=components, info={"booking": booking})
            return StepResult(observation="Booking recorded.", reward=reward, done=True)
        users = sum(m.role == "user" for m in self.state["history"])
        if users > self.max_user_turns:
            self.state["result"] = VerifyResult(reward=0.0, components=dict.fromkeys(FIELDS, 0.0),
                                                info={"reason": f"no booking after {self.max_user_turns} user turns"})
            return StepResult(observation="The customer hung up.", done=True)
        reply = await self._user_reply(profile)
        self.state["history"].append(Message(role="user", content=reply))
        return StepResult(observation=reply)

    def verify(self, task, messages):
        result = self.state.get("result")
        if result is None:
            return VerifyResult(reward=0.0, components=dict.fromkeys(FIELDS, 0.0),
                                info={"reason": "the episode ended without a booking"})
        return result
