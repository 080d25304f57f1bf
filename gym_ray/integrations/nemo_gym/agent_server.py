"""gym_ray's agents behind NeMo Gym's agent-server routes: `POST /run`, `POST /aggregate_metrics`.

NeMo-RL (through NeMo Gym's `RolloutCollectionHelper.run_examples`) and NeMo Gym's collector POST one task
row to `/run` and read back the verify response: the row, plus `response` (Responses-API `output` items;
the last item of every model call carries `prompt_token_ids`, `generation_token_ids` and
`generation_log_probs`), `reward`, `reward_components`, `mask_sample` (also under `instance_config`, for
older NeMo-RL), the failure (`failure_kind`, `failure_reason`, gym_ray's record under `gym_ray`) and the
episode identity `episode_id = {rollout_id, attempt}` (NeMo Gym 0.7's `EpisodeId`). Each call plays one
gym_ray episode with gym_ray's agent, environment and token-exact transcript, so the ids are the engine's
own and `seen == prompt_token_ids[:len(seen)]` holds from one model call to the next.

Run by NeMo Gym: its server block (`responses_api_agents: {gym_ray: {entrypoint: app.py, ...}}`) names
`gym_ray_config` (a run YAML: envs, agents, chat template) and, for the policy, `policy_base_url` /
`policy_model_name` (an OpenAI endpoint that takes token-id prompts and returns token ids, as NeMo-RL's
vLLM server and gym_ray's own do); without `policy_base_url` the run config's `model` is used.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gym_ray.config import ModelConfig, RunConfig, SamplingConfig
from gym_ray.episodes import EpisodeService, Group
from gym_ray.integrations.nemo_gym.responses import output_items, response_object
from gym_ray.resources.http_compat import aggregate_metrics
from gym_ray.tasks import parse_row
from gym_ray.types import Rollout

_FAILURE_KIND = {"verification": "verifier_error", "tool": "agent_run_error", "generate": "agent_run_error",
                 "agent": "agent_run_error", "seed": "agent_run_error", "admission": "agent_run_error",
                 "cleanup": "agent_run_error"}


_SEGMENT_FIELDS = ("prompt_token_ids", "response_token_ids", "response_logprobs", "response_loss_mask",
                   "gen_span_starts", "gen_span_ends")


class RunRequestError(ValueError):
    """A `/run` body gym_ray cannot play; the message names the field."""


def sampling_for(row: dict, base: SamplingConfig) -> SamplingConfig:
    """NeMo-RL writes the trainer's `temperature`, `top_p` and `max_output_tokens` into every row."""
    params = row["responses_create_params"]
    update = {k: params[src] for k, src in (("temperature", "temperature"), ("top_p", "top_p"),
                                            ("max_tokens", "max_output_tokens")) if params.get(src) is not None}
    return base.model_copy(update=update)


def token_fields(row: Rollout) -> list[dict]:
    """Per model call of the segment: the ids NeMo-RL reads (`seen == prompt_token_ids[:len(seen)]`)."""
    return [{"prompt_token_ids": row.prompt_token_ids + row.response_token_ids[:start],
             "generation_token_ids": row.response_token_ids[start:end],
             "generation_log_probs": row.response_logprobs[start:end]}
            for start, end in zip(row.gen_span_starts, row.gen_span_ends, strict=True)]


def run_response(body: dict, rows: list[Rollout], attempt: int) -> dict:
    """The verify response of an episode: every message in `output`, token ids on the calls of its last
    segment (the one with the reward). An earlier segment is a `prefix_break` row, a sequence the next one
    does not extend, which NeMo-RL's contiguous message log cannot hold: its tokens travel under
    `gym_ray.earlier_segments`, untrained by NeMo-RL but not lost."""
    row = rows[-1]
    failure = None if not row.mask_sample else {
        "failure_kind": _FAILURE_KIND.get(row.failure_stage.value if row.failure_stage else "agent"),
        "failure_reason": (row.error or row.status.value)[:2000],
    }
    params = body["responses_create_params"]
    return {
        **body,
        "response": response_object(f"resp_{row.rollout_id}", row.model, output_items(
            json.loads(row.messages_json)[len(json.loads(row.prompt_messages_json)):], token_fields(row)),
            params.get("tools") or [], incomplete=row.truncated),
        "reward": row.reward,
        "reward_components": dict(zip(row.reward_component_names, row.reward_component_values, strict=True)),
        "mask_sample": row.mask_sample,
        "instance_config": {**(body.get("instance_config") or {}), "mask_sample": row.mask_sample},
        **(failure or {}),
        "episode_id": {"rollout_id": row.rollout_id, "attempt": attempt},
        "gym_ray": {"status": row.status.value, "error": row.error,
                    "failure_stage": row.failure_stage and row.failure_stage.value,
                    "failure_kind": row.failure_kind and row.failure_kind.value,
                    "failure_delivery": row.failure_delivery and row.failure_delivery.value,
                    "num_segments": len(rows), "num_turns": row.num_turns, "truncated": row.truncated,
                    "earlier_segments": [{k: getattr(r, k) for k in _SEGMENT_FIELDS} for r in rows[:-1]]},
    }


class AgentServer:
    """The episode service of the run config's envs; `app` serves it to NeMo Gym. `tokenizer` defaults to
    the run config's (else the policy's) with its chat template."""

    def __init__(self, cfg: RunConfig, policy, tokenizer=None) -> None:
        self.cfg = cfg
        self.service = EpisodeService.from_config(cfg, policy=policy, tokenizer=tokenizer)
        self.app = FastAPI(title="gym_ray agent server (NeMo Gym /run)")
        self.app.post("/run")(self.http_run)
        self.app.post("/aggregate_metrics")(self.http_aggregate_metrics)
        for path in ("/", "/health", "/readyz"):
            self.app.get(path)(self.http_health)

    def task_of(self, body: dict):
        if not isinstance(body.get("responses_create_params"), dict):
            raise RunRequestError("responses_create_params: missing (a NeMo Gym task row)")
        env = body.get("env") or (next(iter(self.cfg.envs)) if len(self.cfg.envs) == 1 else None)
        if env not in self.cfg.envs:
            raise RunRequestError(f"env: {env!r} is not one of this agent server's envs {sorted(self.cfg.envs)}")
        index = body.get("_ng_task_index", body.get("_rowidx", "http"))
        return parse_row({**body, "env": env}, default_env=env, default_id=str(index))

    async def run(self, body: dict) -> dict:
        """One episode of the row; the rollout identity is NeMo Gym's (`_ng_rollout_id`, else task/rollout
        index), the attempt its `_ng_attempt_index`."""
        task = self.task_of(body)
        index = int(body.get("_ng_rollout_index") or 0)
        attempt = int(body.get("_ng_attempt_index") or 0)
        group = str(body.get("_ng_task_index", task.task_id))
        rows = await self.service.run(task, index, Group(group, group_size=index + 1, attempt=attempt),
                                      sampling=sampling_for(body, self.cfg.collect.sampling))
        if body.get("_ng_rollout_id"):
            rows = [r.model_copy(update={"rollout_id": body["_ng_rollout_id"]}) for r in rows]
        return run_response(body, rows, attempt)

    async def http_run(self, request: Request):
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise RunRequestError(f"body: expected a task row (a JSON object), got {type(body).__name__}")
            return await self.run(body)
        except ValueError as e:  # RunRequestError, a row that is not a task, a body that is not JSON
            return JSONResponse({"error": f"run: {e}"}, status_code=400)

    async def http_aggregate_metrics(self, request: Request):
        rows = (await request.json()).get("verify_responses")
        if not isinstance(rows, list):
            return JSONResponse({"error": "aggregate_metrics: verify_responses: must be a list"}, status_code=400)
        return aggregate_metrics(rows)

    async def http_health(self) -> dict:
        return {"status": "ok", "envs": sorted(self.cfg.envs)}


def policy_model(model: ModelConfig, block: dict) -> ModelConfig:
    """The run config's model, or the OpenAI endpoint NeMo-RL hands its agents (`policy_base_url`,
    `policy_model_name`), reached token-in/token-out like any external gym_ray policy."""
    if not block.get("policy_base_url"):
        return model
    return ModelConfig(kind="openai", base_url=block["policy_base_url"], name=model.name,
                       model=block.get("policy_model_name") or model.model, chat_template=model.chat_template,
                       tokenizer=model.tokenizer)


def main() -> None:
    """The entrypoint NeMo Gym runs (`responses_api_agents/gym_ray/app.py`), see the module docstring."""
    import uvicorn
    import yaml

    from gym_ray.config import load_config
    from gym_ray.models.client import make_policy_client

    name = os.environ["NEMO_GYM_CONFIG_PATH"]
    block = yaml.safe_load(os.environ["NEMO_GYM_CONFIG_DICT"])[name]["responses_api_agents"]["gym_ray"]
    cfg = load_config(block["gym_ray_config"], list(block.get("overrides") or []))
    cfg.model = policy_model(cfg.model, block)
    policy = make_policy_client(cfg.model, app_name="policy")
    uvicorn.run(AgentServer(cfg, policy).app, host=block["host"], port=int(block["port"]),
                log_level="warning", access_log=False)
