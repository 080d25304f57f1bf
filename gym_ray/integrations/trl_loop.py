"""The whole RL loop on one machine: a gym_ray run config's policy on Serve, its environments, and TRL's
GRPOTrainer learning from their episodes, weights pushed back after every step.

`benchmarks/learning_curve.py` runs it and prints the table; tests run a few steps. The trainer starts
from the policy's own checkpoint (`model.model`, default the embedded SmolLM2-135M-Instruct), so step 0
is on-policy before the first push. CPU settings (the fastest measured on a 2-core machine): fp32, no
gradient checkpointing, no reference model (`beta=0`), one iteration per generation.

`off_policy_steps` 0 is the synchronous loop (each step's rollouts, then its training); 1 or 2 generate
the next steps' rollouts while a step trains, on the same machine (`GymRayRollouts`' stream), with rows
up to that many versions old; `off_policy_mask_threshold` turns on TRL's off-policy sequence mask.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from gym_ray.collect import Collector, load_run_tasks
from gym_ray.config import RunConfig, TreeConfig
from gym_ray.integrations.trl import GymRayRollouts, WeightSync, env_reward, tree_advantage, trl_dataset
from gym_ray.models.names import tokenizer_path_for
from gym_ray.monitors import MonitorStop


@dataclass
class LoopSettings:
    steps: int = 8
    prompts_per_step: int = 4
    learning_rate: float = 3e-5
    seed: int = 0
    weight_sync: bool = True
    tree: TreeConfig | None = None  # tree rollouts: leaves as samples, TRL's reward their tree advantage
    prefix_loss: str = "train_once"  # a tree's shared prefix in the loss: train_once | weighted
    off_policy_steps: int = 0
    off_policy_mask_threshold: float | None = None


@dataclass
class LoopResult:
    """One record per step (`GymRayRollouts.history` plus train and sync seconds), the trainer, the rows' dir."""

    steps: list[dict] = field(default_factory=list)
    output_dir: Path | None = None
    trainer: Any = None
    stopped_by: Any = None  # the alert of the monitor (`collect.monitors`, `on_alert: stop`) that ended training


class _StepTimer(TrainerCallback):
    """Wall seconds of each optimizer step (rollout + forward/backward + update), before the weight push."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.monotonic() - self._began)


def grpo_config(cfg: RunConfig, settings: LoopSettings, scratch: Path):
    """TRL's GRPOConfig for CPU: fp32, on-policy, the sampling temperature of the gym_ray run."""
    from trl import GRPOConfig

    g = cfg.collect.num_repeats * (settings.tree.leaves if settings.tree else 1)
    return GRPOConfig(
        output_dir=str(scratch), use_cpu=True, bf16=False, gradient_checkpointing=False, beta=0.0,
        num_iterations=1, num_generations=g, per_device_train_batch_size=settings.prompts_per_step * g,
        gradient_accumulation_steps=1, max_completion_length=cfg.collect.sampling.max_tokens,
        temperature=cfg.collect.sampling.temperature, learning_rate=settings.learning_rate,
        lr_scheduler_type="constant", max_steps=settings.steps, logging_steps=1, save_strategy="no",
        report_to="none", seed=settings.seed, data_seed=settings.seed, dataloader_num_workers=0,
        off_policy_mask_threshold=settings.off_policy_mask_threshold,
    )


def closed_loop(cfg: RunConfig, settings: LoopSettings, output_dir: str | Path, apps: dict[str, str], *,
                on_batch: Callable[[dict], None] | None = None) -> LoopResult:
    """Train for `settings.steps` GRPO steps on the deployed `apps` (policy and envs, from `deploy_all`);
    every step's rows go to `output_dir` as Parquet; `on_batch` sees each dict handed to TRL."""
    import tempfile

    from trl import GRPOTrainer

    from gym_ray.models import make_policy_client

    cfg = cfg.model_copy(update={"collect": cfg.collect.model_copy(update={"tree": settings.tree})})
    tasks = load_run_tasks(cfg)
    policy = make_policy_client(cfg.model, apps[cfg.model.name])
    timer = _StepTimer()
    stopped = None
    with tempfile.TemporaryDirectory(prefix="gym_ray-trl-") as scratch, Collector(cfg, policy, apps=apps) as col:
        rollouts = GymRayRollouts(col, policy, output_dir=output_dir, on_batch=on_batch, prefix_loss=settings.prefix_loss,
                                  off_policy_steps=settings.off_policy_steps, tasks=tasks, seed=settings.seed)
        callbacks: list = [timer]
        sync: WeightSync | None = rollouts.weight_sync(Path(scratch) / "weights") if settings.weight_sync else None
        if sync is not None:
            callbacks.append(sync)
        try:
            rollouts.run(col.start())
            trainer = GRPOTrainer(model=tokenizer_path_for(cfg.model), args=grpo_config(cfg, settings, Path(scratch)),
                                  train_dataset=trl_dataset(tasks),
                                  reward_funcs=tree_advantage if settings.tree else env_reward,
                                  rollout_func=rollouts, callbacks=callbacks)
            try:
                trainer.train()
            except MonitorStop as e:  # the step's finished rows are written; training ends there
                stopped = e.alert
        finally:
            rollouts.close()
    pushes = sync.seconds[1:] if sync is not None else []  # [0] is the push at train begin
    steps = []
    for i, rec in enumerate(rollouts.history):
        step_s = timer.seconds[i] if i < len(timer.seconds) else None
        steps.append({**rec, "step_s": step_s and round(step_s, 3),
                      "train_s": step_s and round(step_s - rec["rollout_s"], 3),
                      "sync_s": round(pushes[i], 3) if i < len(pushes) else None})
    return LoopResult(steps=steps, output_dir=Path(output_dir), trainer=trainer, stopped_by=stopped)
