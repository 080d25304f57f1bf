"""VeRL agent loop: each dataset row's gym_ray episode runs on VeRL's own rollout servers.

VeRL instantiates one `GymRayAgentLoop` per sample and calls `run(sampling_params, **row)`. The row's
`extra_info.task_json` (written by `gym-ray export verl`) names the environment and the task; the episode
runs through gym_ray's episode service (agents, environments, token-exact transcript, failure contract)
with `server_manager.generate` as the policy, and its row becomes an `AgentLoopOutput` whose
`reward_score` is the environment's verifier reward (so VeRL's reward function is skipped).

The gym_ray run config (environments, agents, chat template, per-turn `max_tokens`) is the loop's
`run_config` key in the `agent_loop_config_path` YAML (see `verl_agent_loop.yaml`), else the
`GYM_RAY_CONFIG` environment variable of the worker processes.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from gym_ray.clients import Generation
from gym_ray.config import SamplingConfig
from gym_ray.episodes import EpisodeService, Group
from gym_ray.errors import Status
from gym_ray.integrations.tree_samples import FILLER_STATUS, TreeSamples, is_filler, leaf_samples
from gym_ray.models.callable import CallablePolicy
from gym_ray.types import Rollout, Task

logger = logging.getLogger(__name__)

AGENT_NAME = "gym_ray"
CONFIG_ENV = "GYM_RAY_CONFIG"
_MAX_TRACKED_GROUPS = 100_000
_TREES = TreeSamples()


class RowError(ValueError):
    """A dataset row gym_ray cannot run; the message names the row and the field. It fails the whole
    `generate_sequences` call: the batch is never silently shortened."""


def generation_from_token_output(out: Any, max_tokens: int, eos_ids: frozenset[int], model: str) -> Generation:
    """VeRL's `TokenOutput` as a gym_ray `Generation`: ids and logprobs unchanged, VeRL's stop reason mapped
    to vLLM's finish reasons, the policy version the server's `global_steps`. In VeRL's fully-async mode a
    call cut by a weight sync is resumed and merged into one output (partial rollout) under several
    versions: it is stamped with the oldest, `min_global_steps`, as staleness counts from the oldest token."""
    ids = list(out.token_ids)
    logprobs = list(out.log_probs) if out.log_probs is not None else [0.0] * len(ids)
    if out.stop_reason in ("aborted", "abort"):
        finish = "abort"
    elif out.stop_reason == "length" or (len(ids) >= max_tokens and (not ids or ids[-1] not in eos_ids)):
        finish = "length"
    else:
        finish = "stop"
    extra = out.extra_fields or {}
    version = extra.get("min_global_steps", extra.get("global_steps"))
    return Generation(token_ids=ids, logprobs=logprobs, finish_reason=finish, model=model,
                      policy_version=int(version) if version is not None else 0)


_next_index: OrderedDict[tuple[int, str], int] = OrderedDict()


def rollout_index(service: EpisodeService, group_id: str) -> int:
    """The classic worker passes no sample number: count the samples of each uid (bounded memory)."""
    key = (id(service), group_id)
    i = _next_index.pop(key, 0)
    _next_index[key] = i + 1
    if len(_next_index) > _MAX_TRACKED_GROUPS:
        _next_index.popitem(last=False)
    return i


def task_from_row(row: dict[str, Any], where: str) -> Task:
    """The gym_ray task of a dataset row, from `extra_info.task_json`; errors name the row and field."""
    extra = row.get("extra_info")
    if not isinstance(extra, dict) or "task_json" not in extra:
        raise RowError(f"{where}: extra_info.task_json: missing (write the dataset with `gym-ray export verl`)")
    try:
        return Task.model_validate_json(extra["task_json"])
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"loc": (), "msg": str(e)}
        loc = ".".join(str(p) for p in first["loc"])
        raise RowError(f"{where}: extra_info.task_json{'.' + loc if loc else ''}: {first['msg']}") from e


@register(AGENT_NAME)
class GymRayAgentLoop(AgentLoopBase):
    """Runs the row's gym_ray episode with VeRL's `server_manager` as the policy."""

    def __init__(self, *args, run_config: str | None = None, overrides: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.run_config = run_config or os.environ.get(CONFIG_ENV)
        if not self.run_config:
            raise ValueError(f"gym_ray agent loop: no run config; set `run_config` in the agent loop YAML "
                             f"or the {CONFIG_ENV} environment variable")
        self.overrides = tuple(str(o) for o in overrides)
        self.prompt_length = self.rollout_config.prompt_length
        self.response_length = self.rollout_config.response_length

    def _policy(self, trainer_params: dict[str, Any], eos_ids: frozenset[int]) -> CallablePolicy:
        """The trainer's servers as a gym_ray policy; each call sends VeRL's own sampling parameters with
        gym_ray's per-turn limits (max_tokens left in the budget, stop strings)."""
        model = str(self.config.actor_rollout_ref.model.path)
        server = self.server_manager

        async def generate(prompt_ids: list[int], sampling: SamplingConfig, request_id: str) -> Generation:
            params = {**trainer_params, "temperature": sampling.temperature, "top_p": sampling.top_p,
                      "top_k": sampling.top_k, "max_tokens": sampling.max_tokens}
            if sampling.stop:
                params["stop"] = list(sampling.stop)
            if sampling.seed is not None:
                params["seed"] = sampling.seed
            out = await server.generate(request_id=request_id, prompt_ids=prompt_ids, sampling_params=params)
            return generation_from_token_output(out, sampling.max_tokens, eos_ids, model)

        return CallablePolicy(generate, model_name=model,
                              tokenizer_path=getattr(self.tokenizer, "name_or_path", None) or model)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput | list[AgentLoopOutput]:
        uid = str(kwargs.get("uid", ""))
        where = f"row index={kwargs.get('index')!r} uid={uid!r}"
        task = task_from_row(kwargs, where)
        eos = self.tokenizer.eos_token_id
        policy = self._policy(dict(sampling_params), frozenset([eos] if eos is not None else []))
        # An episode must fit VeRL's padded prompt + response width.
        service = EpisodeService.shared(self.run_config, self.overrides, policy=policy,
                                        max_total_tokens=self.prompt_length + self.response_length)
        if task.env not in service.envs:
            raise RowError(f"{where}: extra_info.task_json.env: unknown env {task.env!r}; "
                           f"the gym_ray run config ({self.run_config}) has {sorted(service.envs)}")
        v1 = "session_id" in kwargs  # VeRL's v1 worker numbers the n sessions of a prompt itself
        n = int(self.rollout_config.n)
        index = int(kwargs["session_id"]) if v1 else rollout_index(service, uid)
        group = Group(uid or task.task_id, group_size=max(n, index + 1))
        sampling = service.sampling.model_copy(update={
            k: sampling_params[k] for k in ("temperature", "top_p", "top_k") if sampling_params.get(k) is not None})
        with_logprobs = bool(sampling_params.get("logprobs"))
        if service.tree is None:
            rows = await service.run(task, index, group, policy=policy, sampling=sampling)
            outputs = [self._output(r, rows[-1], service, task, with_logprobs) for r in rows]
        else:  # sample `index` is one leaf of a tree its prompt's samples share (gym_ray.integrations.tree_samples)
            if n % service.tree.leaves:
                raise RowError(f"{where}: collect.tree has {service.tree.leaves} leaves per tree; "
                               f"rollout.n={n} is not a multiple of it")
            tree = await _TREES.rows((id(service), group.group_id), index, service.tree.leaves,
                                     lambda first: service.run_tree(task, first, group, policy=policy,
                                                                    sampling=sampling))
            samples = leaf_samples(tree, index)
            rows = [r for r, _ in samples]
            outputs = [self._output(r, rows[-1], service, task, with_logprobs, mask) for r, mask in samples]
        if v1 or len(outputs) == 1:
            return outputs if v1 else outputs[0]
        # The classic AgentLoopWorker takes one linear sequence per sample: train on the last segment.
        logger.warning("gym_ray: rollout %s has %d segments; the classic VeRL worker keeps the last one "
                       "(the v1 trainer takes them all)", rows[-1].rollout_id, len(rows))
        return outputs[-1]

    def _output(self, row: Rollout, last: Rollout, service: EpisodeService, task: Task,
                with_logprobs: bool, loss_mask: list[int] | None = None) -> AgentLoopOutput:
        """One segment as VeRL's output. The episode's outcome is its last row's: when it failed, every
        segment has a zero mask (no gradient) and says why in `gym_ray_status`; its reward is 0 only
        because VeRL needs a number for every sample, never as a verdict. `loss_mask`: a tree leaf's, its
        shared prefix kept once per tree (a filler's all 0, its reward the leaf's that stands for it)."""
        ok = last.status == Status.OK
        prompt, response = list(row.prompt_token_ids), list(row.response_token_ids)
        mask = list(row.response_loss_mask if loss_mask is None else loss_mask)
        logprobs = list(row.response_logprobs)
        status, error = FILLER_STATUS if is_filler(last) else last.status.value, last.error
        if len(prompt) > self.prompt_length and ok:
            ok, status = False, Status.MODEL_ERROR.value
            error = f"prompt of {len(prompt)} tokens exceeds rollout.prompt_length {self.prompt_length}"
        if not prompt:  # an episode that failed before it had a prompt: a shape-valid, fully masked stand-in
            prompt = service.tokenizer.prompt_ids(task.prompt)
        if not response:
            eos = self.tokenizer.eos_token_id
            response, mask, logprobs = [eos if eos is not None else 0], [0], [0.0]
        truncated = last.truncated or len(response) > self.response_length
        prompt = prompt[-self.prompt_length:]
        response, mask, logprobs = (x[: self.response_length] for x in (response, mask, logprobs))
        if not ok:
            mask = [0] * len(mask)
        metrics = json.loads(row.metrics_json or "{}")
        versions = list(row.gen_policy_versions)
        extra = {
            "gym_ray_status": status,
            "gym_ray_error": error,
            "gym_ray_failure_stage": last.failure_stage.value if last.failure_stage else None,
            "gym_ray_failure_kind": last.failure_kind.value if last.failure_kind else None,
            "gym_ray_failure_delivery": last.failure_delivery.value if last.failure_delivery else None,
            "gym_ray_reward_components": dict(zip(last.reward_component_names, last.reward_component_values,
                                                  strict=True)),
            "gym_ray_policy_versions": versions,
            "gym_ray_group_id": row.group_id,
            "gym_ray_rollout_id": row.rollout_id,
            "gym_ray_task_id": row.task_id,
            "gym_ray_env": row.env,
            "gym_ray_segment": [row.segment_index, row.num_segments],
            "gym_ray_truncated": truncated,
            "gym_ray_tree": [row.tree_id, row.node_id, row.parent_node_id, row.branch_token_offset],
            "turn_scores": list(last.turn_rewards),
            "min_global_steps": min(versions) if versions else None,
            "max_global_steps": max(versions) if versions else None,
            "reward_extra_info": {},
        }
        return AgentLoopOutput(
            prompt_ids=prompt, response_ids=response, response_mask=mask,
            response_logprobs=logprobs if with_logprobs else None,
            reward_score=float(last.reward) if ok else 0.0,
            num_turns=last.num_turns,
            metrics=AgentLoopMetrics(generate_sequences=metrics.get("generate_s", 0.0),
                                     tool_calls=metrics.get("tool_s", 0.0)),
            extra_fields=extra,
        )
