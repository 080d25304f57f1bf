"""TRL trains on gym_ray episodes: a `rollout_func` for `GRPOTrainer` and the callback that syncs weights.

    dataset = trl_dataset(load_tasks(["environments/one_word/data/example.jsonl"]))
    rollouts = GymRayRollouts(collector, policy, output_dir="runs/trl")       # a gym_ray-hosted policy
    trainer = GRPOTrainer(model=path, args=GRPOConfig(num_generations=4, ...), train_dataset=dataset,
                          reward_funcs=env_reward, rollout_func=rollouts, callbacks=[rollouts.weight_sync()])

TRL (1.16) hands `rollout_func` the prompt column, each prompt `num_generations` times in a row, and
nothing else of the row: so the dataset's first prompt message carries the whole task (`gym_ray_task`,
written by `trl_dataset` / `gym-ray export trl`). Each distinct prompt runs as one complete gym_ray group
on the hosted policy through the `Collector`; the rows go to Parquet and back to TRL, token for token:
`prompt_ids` / `completion_ids` / `logprobs` / `env_mask` are the row's `prompt_token_ids` /
`response_token_ids` / `response_logprobs` / `response_loss_mask` (0 on tool, observation and template
tokens, which TRL then leaves out of the loss). The reward is the environment's verifier's: `env_reward`
(a reward function that returns the field) and `reward_components`.

- **Multi-segment episodes** (a history rewrite split the episode, status `prefix_break`): TRL takes one
  sequence per sample, so the episode's *last* segment (the one with the reward) is the sample; the
  earlier segments' tokens stay in Parquet and are not trained on. `num_segments` says how many there were.
- **Failures** (a row with `mask_sample`): reward `None` (TRL: NaN, left out of the group baseline,
  advantage 0) and `env_mask` all 0, so a failed episode neither teaches nor shifts its group's baseline.
- **Tree rollouts** (`collect.tree`): `num_generations` counts leaves (`num_repeats * width^depth`), each
  leaf one sample. A tree's shared prefix enters the loss once in all: `prefix_loss="train_once"` (the
  default) keeps its mask in one leaf, `"weighted"` weights each leaf's copy 1/(leaves sharing it). The
  reward function `tree_advantage` gives TRL each leaf's reward against its siblings' mean (`global_term`:
  plus against its tree's mean) instead of the raw reward; the tree columns come along.
- **On-policy**: `weight_sync()` pushes the trainer's weights into the hosted vLLM after every optimizer
  step (`save_pretrained` to a directory, then vLLM's `reload_weights` through `collective_rpc`, with
  generation paused) and sets the policy version to the trainer's `global_step`. A row generated under
  any other version is masked as `stale`. Without `use_vllm`, TRL ignores the sampler's logprobs in the
  loss (it assumes on-policy data); its importance-sampling correction exists only on its own vLLM path
  (private attributes), so the loop stays strictly on-policy instead. `off_policy_mask_threshold` is the
  one public TRL option that reads the logprobs returned here.
- **Asynchronous** (`off_policy_steps=k`, k >= 1): a `RolloutStream` keeps generating while TRL trains,
  up to k batches ahead, so step t+1's rollouts are made while step t trains; a row is used if every span
  of it is at most k versions old (older groups are re-run by the stream, never handed out). The stream
  owns the task order (each epoch a seeded shuffle of `tasks`): the prompts TRL's sampler picked are not
  the ones run, TRL learns from the returned `prompt_ids` / `completion_ids`. TRL has no importance-
  sampling correction for these rows (`vllm_importance_sampling_correction` acts only with `use_vllm`, on
  the logprobs of TRL's own vLLM client); `off_policy_mask_threshold` (DeepSeek-V3.2's off-policy sequence
  mask) is the public path that weighs them against the sampler's logprobs returned here.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from transformers import TrainerCallback

from gym_ray.advantages import DEFAULT_PREFIX_MODE, PREFIX_MODES, prefix_loss_weights, tree_advantages
from gym_ray.background import BackgroundLoop
from gym_ray.collect import Collector, MetricsAccumulator, ParquetSink, RolloutStream, tables_to_groups
from gym_ray.integrations.export import TRL_TASK_KEY, trl_rows
from gym_ray.monitors import MonitorStop
from gym_ray.types import Rollout, RolloutGroup, Task, rollouts_to_arrow


class PromptTaskError(ValueError):
    """A prompt TRL passed carries no gym_ray task; the message says how to build the dataset."""


def trl_dataset(tasks: list[Task]):
    """`trl_rows` as a Hugging Face `datasets.Dataset`, what GRPOTrainer's `train_dataset` takes."""
    from datasets import Dataset

    return Dataset.from_list(trl_rows(tasks))


def task_of(prompt: Any) -> Task:
    """The task a prompt (a chat list from `trl_rows`) carries."""
    text = prompt[0].get(TRL_TASK_KEY) if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict) else None
    if not text:
        head = repr(prompt)[:80]
        raise PromptTaskError(f"prompt {head}: its first message has no {TRL_TASK_KEY!r}; build the dataset with "
                              "gym_ray.integrations.trl.trl_dataset or `gym-ray export trl`")
    return Task.model_validate_json(text)


def env_reward(completions: list, env_reward: list, **kwargs: Any) -> list:
    """The environment's reward as TRL's reward function (None for a failed episode: TRL masks it)."""
    return env_reward


def tree_advantage(completions: list, tree_advantage: list, **kwargs: Any) -> list:
    """Each leaf's tree advantage as TRL's reward (None for a failed episode); use it with
    `scale_rewards="none"`: a group of whole trees has mean advantage 0, so TRL's centring keeps it."""
    return tree_advantage


def component_reward(name: str):
    """A reward function returning the verifier's component `name` (None where absent): add it with
    weight 0 to see the component in TRL's logs (`rewards/<name>/mean`)."""

    def reward(completions: list, reward_components: list, **kwargs: Any) -> list:
        return [c.get(name) if c is not None else None for c in reward_components]

    reward.__name__ = name
    return reward


class GymRayRollouts:
    """`rollout_func` for TRL's GRPOTrainer, backed by a gym_ray `Collector` on a hosted policy.

    `policy` is the `HandlePolicyClient` of the policy the collector generates with (the one weights are
    pushed to); `output_dir` gets every step's rows as Parquet (one file per step); `on_batch` sees each
    dict handed to TRL. `history` holds one record per call: step, policy version, mean reward, pass@1,
    rollout seconds (the trainer's wait), failures. With `off_policy_steps` > 0 the rows come from a
    `RolloutStream` over `tasks` that keeps generating while TRL trains (module docstring).
    """

    def __init__(self, collector: Collector, policy: Any = None, *, output_dir: str | Path | None = None,
                 prefix_loss: str = DEFAULT_PREFIX_MODE, global_term: bool = False,
                 on_batch: Callable[[dict], None] | None = None, off_policy_steps: int = 0,
                 tasks: list[Task] | None = None, seed: int = 0):
        if off_policy_steps < 0:
            raise ValueError(f"off_policy_steps must be >= 0, got {off_policy_steps}")
        if off_policy_steps and not tasks:
            raise ValueError("off_policy_steps > 0 needs the tasks to stream: GymRayRollouts(..., tasks=...)")
        self.off_policy_steps = off_policy_steps
        self.tasks, self.seed = tasks, seed
        self.stream: RolloutStream | None = None
        if prefix_loss not in PREFIX_MODES:
            raise ValueError(f"GymRayRollouts: prefix_loss {prefix_loss!r}: expected one of {', '.join(PREFIX_MODES)}")
        self.prefix_loss, self.global_term = prefix_loss, global_term
        self.collector = collector
        self.on_batch = on_batch
        self.policy = policy
        self.sink = ParquetSink(output_dir, rows_per_file=1 << 30, roll_seconds=float("inf")) if output_dir else None
        self.history: list[dict] = []
        self.policy_version: int | None = None  # the version last pushed by `weight_sync()`
        self._loop = BackgroundLoop("gym_ray-trl")

    def run(self, coro) -> Any:
        """Run a coroutine on the collector's own loop (TRL calls from its synchronous training loop)."""
        return self._loop.run(coro)

    def weight_sync(self, weights_dir: str | Path | None = None) -> WeightSync:
        if self.policy is None:
            raise ValueError("weight_sync needs the hosted policy: GymRayRollouts(collector, policy=...)")
        return WeightSync(self, weights_dir)

    def __call__(self, prompts: list, trainer: Any) -> dict:
        size = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        started = time.monotonic()
        if self.off_policy_steps and trainer.model.training:
            plan: list = self.run(self._pull(len(prompts), size))
            tables = [rollouts_to_arrow([r for g in plan for r in g.rollouts])]
        else:
            plan = self.collector.plan(group_tasks(prompts, size), size)
            tables = self.run(self._stream(plan))
        seconds = time.monotonic() - started
        if self.sink is not None:
            for table in tables:
                self.sink.write(table)
            self.sink.flush()
        if self.collector.stopped_by is not None:  # a monitor's stop: the finished rows are written, TRL stops
            raise MonitorStop(self.collector.stopped_by)
        by_id = {g.group_id: g for g in tables_to_groups(tables)}
        eps = [ep for g in plan for ep in fill_tree_group(episodes(by_id[g.group_id].rollouts), size)]
        out = to_trl(eps, trainer.processing_class, self.policy_version, self.off_policy_steps)
        acc = MetricsAccumulator()
        for table in tables:
            acc.add(table)
        m = acc.summary()["overall"]
        self.history.append({
            "step": trainer.state.global_step, "policy_version": sorted(set(out["policy_version"])),
            "rollouts": m["rollouts"], "mean_reward": m["mean_reward"], "pass@1": m.get("pass@1"),
            "rollout_s": round(seconds, 3), "failed": sum(s != "ok" for s in out["gym_ray_status"]),
            "components": mean_components(out["reward_components"]),
        })
        add_tree_fields(out, [row for row, _ in eps], self.prefix_loss, self.global_term)
        if self.on_batch is not None:
            self.on_batch(out)
        return out

    async def _stream(self, plan: list) -> list[pa.Table]:
        return [t async for t in self.collector.stream_tables(plan)]

    async def _pull(self, num_prompts: int, size: int) -> list[RolloutGroup]:
        """The next batch of the stream (started on the first call): `num_prompts / size` complete groups."""
        if num_prompts % size:
            raise PromptTaskError(f"{num_prompts} prompts do not split into groups of num_generations={size}")
        n, k = num_prompts // size, self.off_policy_steps
        if self.stream is None:  # k batches ahead: one running, k - 1 waiting (admitted while fewer wait)
            self.stream = RolloutStream(self.collector, task_epochs(self.tasks or [], self.seed), batch_groups=n,
                                        num_repeats=size, max_staleness=k, max_buffered=(k - 1) * n + 1,
                                        max_in_flight=n, policy_version=self.policy_version or 0)
            await self.stream.start()
        return await self.stream.next_batch(n)

    def set_policy_version(self, version: int) -> None:
        """The trainer's policy version: rows older than `off_policy_steps` versions are not handed out."""
        self.policy_version = version
        if self.stream is not None:
            self.run(self._set_version(version))

    async def _set_version(self, version: int) -> None:
        self.stream.set_policy_version(version)

    def close(self) -> None:
        if self.stream is not None:
            self.run(self.stream.close())
        if self.sink is not None:
            self.sink.close()
        self._loop.stop()


def task_epochs(tasks: list[Task], seed: int) -> Iterator[Task]:
    """`tasks` endlessly, each epoch in a new order drawn from `seed`."""
    rng = random.Random(seed)
    while True:
        order = list(tasks)
        rng.shuffle(order)
        yield from order


def mean_components(components: list[dict | None]) -> dict[str, float]:
    """Each reward component's mean over the episodes that report it."""
    values: dict[str, list[float]] = {}
    for c in components:
        for name, v in (c or {}).items():
            values.setdefault(name, []).append(v)
    return {name: sum(v) / len(v) for name, v in sorted(values.items())}


def group_tasks(prompts: list, size: int) -> list[Task]:
    """One task per group of `size` consecutive prompts (TRL's RepeatSampler order), checked."""
    if size < 1 or len(prompts) % size:
        raise PromptTaskError(f"{len(prompts)} prompts do not split into groups of num_generations={size}")
    tasks = []
    for i in range(0, len(prompts), size):
        task = task_of(prompts[i])
        if any(task_of(p).task_id != task.task_id for p in prompts[i + 1:i + size]):
            raise PromptTaskError(f"prompts {i}..{i + size - 1} are not one task repeated num_generations times "
                                  "(TRL's sampler order); a custom sampler must keep each group contiguous")
        tasks.append(task)
    return tasks


def episodes(rows: list[Rollout]) -> list[tuple[Rollout, int]]:
    """Each episode's last segment (the one with the reward) and its number of segments, in rollout order."""
    return [(r, r.num_segments) for r in rows if r.segment_index == r.num_segments - 1]


def to_trl(eps: list[tuple[Rollout, int]], tokenizer: Any, policy_version: int | None,
           max_staleness: int = 0) -> dict:
    """TRL's rollout_func dict for these episodes (one sample each, group-contiguous); a row with a span
    more than `max_staleness` versions behind `policy_version` (or ahead of it) is masked as stale."""
    out: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "env_reward",
                                            "reward_components", "policy_version", "num_segments",
                                            "gym_ray_status", "gym_ray_rollout_id")}
    for row, num_segments in eps:
        versions = set(row.gen_policy_versions)
        off_policy = policy_version is not None and any(not 0 <= policy_version - v <= max_staleness
                                                        for v in versions)
        masked = row.mask_sample or off_policy
        prompt, completion = list(row.prompt_token_ids), list(row.response_token_ids)
        mask, logprobs = [int(m) for m in row.response_loss_mask], [float(x) for x in row.response_logprobs]
        if not prompt:  # failed before its prompt was rendered: TRL still needs a sequence
            prompt = tokenizer.apply_chat_template(json.loads(row.prompt_messages_json) or
                                                   [{"role": "user", "content": ""}], add_generation_prompt=True,
                                                   tokenize=True, return_dict=False)
        if not completion:
            completion, mask, logprobs = [tokenizer.eos_token_id], [0], [0.0]
        out["prompt_ids"].append(prompt)
        out["completion_ids"].append(completion)
        out["logprobs"].append(logprobs)
        out["env_mask"].append([0] * len(mask) if masked else mask)
        out["env_reward"].append(None if masked else row.reward)
        out["reward_components"].append(None if masked else dict(zip(row.reward_component_names,
                                                                      row.reward_component_values, strict=True)))
        out["policy_version"].append(max(versions, default=row.policy_version))
        out["num_segments"].append(num_segments)
        out["gym_ray_status"].append("stale" if off_policy and not row.mask_sample else row.status.value)
        out["gym_ray_rollout_id"].append(row.rollout_id)
    return out


def fill_tree_group(eps: list[tuple[Rollout, int]], size: int) -> list[tuple[Rollout, int]]:
    """A tree group with a node that ended before branching (one leaf for its whole subtree) filled to TRL's
    `size` samples: each missing leaf is a masked copy of the leaf that stands for it (no loss, no reward,
    status `tree_filler` in TRL's dict), so TRL's groups stay whole."""
    if len(eps) >= size or not eps or not eps[0][0].tree_id:
        return eps
    present = {row.rollout_index: (row, n) for row, n in eps}
    first = min(present)
    filled = []
    for index in range(first, first + size):
        if index in present:
            filled.append(present[index])
            continue
        row, n = filled[-1]
        filled.append((row.model_copy(update={"mask_sample": True, "rollout_index": index,
                                              "rollout_id": f"{row.rollout_id}+filler{index}"}), n))
    return filled


def add_tree_fields(out: dict, rows: list[Rollout], prefix_loss: str, global_term: bool) -> None:
    """Tree leaves in TRL's dict: the shared prefix's loss weights in `env_mask`, `tree_advantage`, and the
    tree columns. A sample TRL gets masked (reward None: failed or stale) shares no prefix and has no
    advantage."""
    rows = [r.model_copy(update={"mask_sample": True}) if reward is None else r
            for r, reward in zip(rows, out["env_reward"], strict=True)]
    for i, (row, weights) in enumerate(zip(rows, prefix_loss_weights(rows, prefix_loss), strict=True)):
        if row.tree_id and not row.mask_sample:
            out["env_mask"][i] = [int(w) for w in weights] if prefix_loss == "train_once" else weights
    out["tree_advantage"] = tree_advantages(rows, global_term=global_term)
    out["gym_ray_status"] = ["tree_filler" if "+filler" in r.rollout_id else s
                             for r, s in zip(rows, out["gym_ray_status"], strict=True)]
    for column in ("tree_id", "node_id", "parent_node_id", "branch_token_offset"):
        out[column] = [getattr(r, column) for r in rows]


class WeightSync(TrainerCallback):
    """Pushes the trainer's weights into the hosted vLLM at the start and after every optimizer step.

    The weights go through `weights_dir` (a fresh temporary directory by default; on a cluster, a path
    every policy replica can read), then `reload_weights` on every engine worker, prefix cache dropped,
    policy version := the trainer's `global_step`. `seconds` records each push.
    """

    def __init__(self, rollouts: GymRayRollouts, weights_dir: str | Path | None = None):
        self.rollouts = rollouts
        self._own_dir = weights_dir is None
        self.weights_dir = Path(weights_dir or tempfile.mkdtemp(prefix="gym_ray-trl-weights-"))
        self.seconds: list[float] = []

    def push(self, model: Any, version: int) -> int:
        started = time.monotonic()
        model.save_pretrained(self.weights_dir, safe_serialization=True)
        policy = self.rollouts.policy

        async def update() -> int:
            await policy.pause(mode="wait")
            try:
                return await policy.update_weights("reload_weights", kwargs={"weights_path": str(self.weights_dir)},
                                                   version=version)
            finally:
                await policy.resume()

        new = self.rollouts.run(update())
        self.rollouts.set_policy_version(new)
        self.seconds.append(time.monotonic() - started)
        return new

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.push(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.push(model, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self._own_dir:
            shutil.rmtree(self.weights_dir, ignore_errors=True)
