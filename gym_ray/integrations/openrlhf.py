"""OpenRLHF trains on gym_ray episodes: this file is OpenRLHF's agent (`--train.agent_func_path <this file>`).

OpenRLHF (0.11.2) loads it by path (`vllm_engine._load_agent_executor`: a class named `AgentExecutor`,
built with no arguments) inside each of its vLLM engine actors, then calls `execute` once per sample with
its own engine. Each call plays one gym_ray episode of the task in `label` (written by
`gym-ray export openrlhf`) on that engine, through gym_ray's agents, environments and token-exact
transcript, and answers with OpenRLHF's dict. Environments run in-process in the engine actor.

Which environments: `GYM_RAY_CONFIG` names a gym_ray run YAML (its `envs`, `model.chat_template`,
`model.tokenizer`, `collect.episode_timeout_s` / `max_retries`; `GYM_RAY_OVERRIDES` adds `key=value`
overrides, space-separated); unset, each env a label names is loaded from gym_ray's shipped
`environments/<env>/config.yaml` with the `auto` chat template. The policy and sampling are always the
trainer's: `model.kind` and `collect.sampling` are not used.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shlex
import uuid
from collections import OrderedDict
from typing import Any

from openrlhf.utils.agent import AgentExecutorBase
from pydantic import ValidationError

from gym_ray.clients import Generation
from gym_ray.config import EnvConfig, ModelConfig, RunConfig, SamplingConfig, load_config
from gym_ray.episodes import EpisodeService, Group
from gym_ray.errors import Status
from gym_ray.integrations.export import shipped_env_configs
from gym_ray.integrations.tree_samples import FILLER_STATUS, TreeSamples, is_filler, leaf_samples
from gym_ray.models.callable import CallablePolicy
from gym_ray.types import Rollout, Task

CONFIG_ENV = "GYM_RAY_CONFIG"
OVERRIDES_ENV = "GYM_RAY_OVERRIDES"
# Fixed keys: OpenRLHF merges `extra_logs` across a batch key by key, so every sample must carry all of them.
FAILED_STATUSES = [s for s in Status if s not in (Status.OK, Status.PREFIX_BREAK)]

logger = logging.getLogger(__name__)


class LabelError(ValueError):
    """A row's label is not a task this run can play; the message names the task and the field."""


def _head(label: Any) -> str:
    text = label if isinstance(label, str) else repr(label)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def parse_label(label: Any) -> Task:
    """The gym_ray task a row's label holds (its JSON text, or the object when the dataset kept it one)."""
    data = label
    if isinstance(label, str):
        try:
            data = json.loads(label)
        except ValueError as e:
            raise LabelError(f"label {_head(label)}: not JSON ({e}); write the prompt dataset with "
                             "`gym-ray export openrlhf`") from None
    if not isinstance(data, dict):
        raise LabelError(f"label {_head(label)}: expected a gym_ray task (a JSON object), got {type(data).__name__}")
    try:
        return Task.model_validate(data)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'label'}: {err['msg']}" for err in e.errors())
        raise LabelError(f"label of task {data.get('task_id', '?')!r}: {fields}") from None


def sampling_from_vllm(params: Any, max_length: int) -> SamplingConfig:
    """The trainer's vLLM `SamplingParams` as gym_ray's; `max_tokens=None` (OpenRLHF: whatever fits) is
    `max_length`, which the episode's token limit then caps per call."""
    stop = params.stop
    return SamplingConfig(
        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
        max_tokens=params.max_tokens or max_length, seed=params.seed,
        stop=[stop] if isinstance(stop, str) else list(stop or []),
    )


def generation_from_vllm(out: Any) -> Generation:
    """A vLLM `RequestOutput` as a Generation: ids as sampled, each one's logprob (0.0 when none were asked)."""
    if out is None or not out.outputs:  # aborted before any output
        return Generation(token_ids=[], logprobs=[], finish_reason="abort")
    c = out.outputs[0]
    ids = list(c.token_ids)
    logprobs = [c.logprobs[i][t].logprob for i, t in enumerate(ids)] if c.logprobs else [0.0] * len(ids)
    return Generation(token_ids=ids, logprobs=logprobs, finish_reason=c.finish_reason or "abort", text=c.text,
                      extra={"prompt_token_ids": list(out.prompt_token_ids or [])})


class EnginePolicy(CallablePolicy):
    """OpenRLHF's engine as a PolicyClient: the trainer's sampling parameters with the agent's per-call
    `max_tokens`; `max_model_len` makes OpenRLHF's `max_length` the episode's whole-sequence limit."""

    def __init__(self, llm_engine: Any, params: Any, *, model_name: str, tokenizer_path: str, max_length: int):
        async def generate(prompt_ids: list[int], sampling: SamplingConfig, request_id: str) -> Generation:
            call = copy.deepcopy(params)
            call.max_tokens = sampling.max_tokens
            return generation_from_vllm(await llm_engine.generate(prompt_ids, call))

        super().__init__(generate, model_name=model_name, tokenizer_path=tokenizer_path)
        self.max_model_len = max_length


def mask_ranges(mask: list[int], offset: int) -> list[tuple[int, int]]:
    """The runs of 1 in `mask` as [start, end) ranges, shifted by `offset`."""
    ranges, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            ranges.append((offset + start, offset + i))
            start = None
    return ranges


def to_openrlhf(row: Rollout, *, num_segments: int, prompt: Any, label: Any, hf_tokenizer: Any,
                with_logprobs: bool, loss_mask: list[int] | None = None) -> dict:
    """OpenRLHF's `execute` result for the episode's last segment (the one with the reward).

    A masked row (a failure, status != ok) has no action ranges, so none of its tokens enters the loss;
    its reward is 0, never inferred. One with no tokens at all (it failed before the prompt was built)
    carries OpenRLHF's own prompt tokens, since a sample needs a sequence. `loss_mask` (a tree leaf's,
    its shared prefix kept once per tree) gives the action ranges instead of the generation spans.
    """
    n_prompt = len(row.prompt_token_ids)
    tokens = row.prompt_token_ids + row.response_token_ids
    if not tokens:
        tokens = list(hf_tokenizer(text=prompt, add_special_tokens=False)["input_ids"])
    if row.mask_sample:
        ranges = []
    elif loss_mask is not None:
        ranges = mask_ranges(loss_mask, n_prompt)
    else:
        ranges = [(n_prompt + s, n_prompt + e) for s, e in zip(row.gen_span_starts, row.gen_span_ends, strict=True)]
    logprobs = [0.0] * (len(tokens) - len(row.response_logprobs)) + list(row.response_logprobs)
    extra_logs = {"gym_ray/failed": float(row.mask_sample),
                  **{f"gym_ray/{s.value}": float(row.status == s) for s in FAILED_STATUSES},
                  "gym_ray/num_turns": float(row.num_turns), "gym_ray/num_tool_calls": float(row.num_tool_calls),
                  "gym_ray/segments": float(num_segments)}
    return {
        "prompt": prompt, "label": label, "images": None, "mm_train_inputs": None,
        "observation_tokens": tokens, "action_ranges": ranges,
        "rollout_log_probs": logprobs if with_logprobs else None,
        "truncated": row.truncated, "reward": row.reward, "scores": row.reward, "extra_logs": extra_logs,
        # Not read by OpenRLHF; for whoever inspects the samples (text does not fit extra_logs' tensors).
        "gym_ray": {
            "rollout_id": row.rollout_id, "task_id": row.task_id, "env": row.env,
            "status": FILLER_STATUS if is_filler(row) else row.status.value,
            "tree": [row.tree_id, row.node_id, row.parent_node_id, row.branch_token_offset],
            "error": row.error, "failure_stage": row.failure_stage and row.failure_stage.value,
            "failure_kind": row.failure_kind and row.failure_kind.value,
            "failure_delivery": row.failure_delivery and row.failure_delivery.value, "attempt": row.attempt,
            "reward_components": dict(zip(row.reward_component_names, row.reward_component_values, strict=True)),
            "turn_rewards": list(row.turn_rewards),
        },
    }


def load_run_config() -> RunConfig | None:
    """`GYM_RAY_CONFIG` (+ `GYM_RAY_OVERRIDES`), or None for the shipped environment configs."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None
    return load_config(path, shlex.split(os.environ.get(OVERRIDES_ENV, "")))


def shipped_env_config(name: str) -> EnvConfig | None:
    """`environments/<name>/config.yaml` as gym_ray ships it, or None."""
    path = shipped_env_configs().get(name)
    return load_config(path).envs.get(name) if path else None


class AgentExecutor(AgentExecutorBase):
    """One gym_ray episode per `execute`, on OpenRLHF's engine; environments and agents built on first use."""

    def __init__(self) -> None:
        self.config = load_run_config()
        self.run_config = self.config or RunConfig(model=ModelConfig(chat_template="auto"))
        self._service: EpisodeService | None = None
        self._trees = TreeSamples()
        self._sample: OrderedDict[str, int] = OrderedDict()  # per label: its samples so far

    def env_config(self, task: Task) -> EnvConfig:
        if self.config is not None:
            if task.env not in self.config.envs:
                raise LabelError(f"label of task {task.task_id!r}: env: unknown env {task.env!r}; "
                                 f"{CONFIG_ENV}={os.environ[CONFIG_ENV]} defines {sorted(self.config.envs)}")
            return self.config.envs[task.env]
        cfg = shipped_env_config(task.env)
        if cfg is None:
            raise LabelError(f"label of task {task.task_id!r}: env: unknown env {task.env!r}; gym_ray ships no "
                             f"environments/{task.env}/config.yaml (set {CONFIG_ENV} to a run config that defines it)")
        return cfg

    def service(self, task: Task, hf_tokenizer: Any, policy: EnginePolicy) -> EpisodeService:
        """The episode service, with the task's env built on its first sample (so a bad env fails there)."""
        if self._service is None:
            self._service = EpisodeService.from_config(self.run_config, policy=policy, envs=(),
                                                       tokenizer=self.run_config.model.tokenizer
                                                       or hf_tokenizer.name_or_path)
        if task.env not in self._service.envs:
            self._service.add_env(task.env, self.env_config(task))
        return self._service

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer, llm_engine, images=None):
        """OpenRLHF calls this n times per prompt (its group); each call is its own gym_ray episode."""
        task = parse_label(label)
        tokenizer_path = self.run_config.model.tokenizer or hf_tokenizer.name_or_path
        policy = EnginePolicy(llm_engine, sampling_params, model_name=hf_tokenizer.name_or_path,
                              tokenizer_path=tokenizer_path, max_length=max_length)
        sampling = sampling_from_vllm(sampling_params, max_length)
        service = self.service(task, hf_tokenizer, policy)
        if service.tree is None:
            rows = await service.run(task, 0, policy=policy, sampling=sampling)
            loss_mask = None
        else:
            rows, loss_mask = await self._tree_leaf(service, task, str(label), policy, sampling)
        row = rows[-1]
        if row.mask_sample:
            logger.warning("gym_ray: task %r (env %r) failed, masked out of the loss: %s: %s", row.task_id, row.env,
                           row.status.value, row.error)
        return to_openrlhf(row, num_segments=len(rows), prompt=prompt, label=label, hf_tokenizer=hf_tokenizer,
                           with_logprobs=sampling_params.logprobs is not None, loss_mask=loss_mask)

    async def _tree_leaf(self, service: EpisodeService, task: Task, label: str, policy: EnginePolicy,
                         sampling: SamplingConfig) -> tuple[list[Rollout], list[int]]:
        """`collect.tree`: this call's leaf of the tree the prompt's calls share (`tree_samples`): its rows
        and its last row's loss mask. OpenRLHF's `n_samples_per_prompt` must be a multiple of the leaves."""
        leaves = service.tree.leaves
        index = self._sample.pop(label, 0)
        self._sample[label] = index + 1
        if len(self._sample) > 100_000:
            self._sample.popitem(last=False)
        tree = await self._trees.rows(label, index, leaves, lambda _: service.run_tree(
            task, 0, Group(uuid.uuid4().hex, group_size=leaves), policy=policy, sampling=sampling))
        samples = leaf_samples(tree, index % leaves)
        return [r for r, _ in samples], samples[-1][1]
