"""The closed RL loop on this machine: TRL GRPO learns from gym_ray episodes, a table per step and a plot.

    .venv/bin/python benchmarks/learning_curve.py                     # one_word, 8 steps, lr 3e-5
    .venv/bin/python benchmarks/learning_curve.py --steps 15 --lr 1e-5 --out runs/learning_curve
    .venv/bin/python benchmarks/learning_curve.py --config environments/counter/config.yaml --tree 2x2

`--tree WIDTHxDEPTH` plays each group as trees (`collect.tree`, branching at every assistant turn) with the
same leaf budget: `num_repeats / width^depth` trees of `width^depth` leaves per task; TRL's reward is then
each leaf's tree advantage and the shared prefix is trained once. `gen tokens` counts the tokens the policy
generated per step (a tree's shared prefix once), from TRL's loss mask.

The embedded SmolLM2-135M-Instruct on vLLM (CPU) behind Serve generates, gym_ray's `one_word` environment
scores, TRL's GRPOTrainer trains the same checkpoint and pushes its weights into vLLM after every step.
Writes `<out>/rollouts/` (every step's rows), `<out>/learning_curve.json` and `<out>/learning_curve.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "environments" / "one_word" / "config.yaml"


def table(steps: list[dict]) -> str:
    names = sorted({n for s in steps for n in s["components"]})
    header = ["step", "policy", "reward", "pass@1", *names, "failed", "gen tokens", "rollout s", "train s", "sync s"]
    lines = [header]
    for s in steps:
        lines.append([str(s["step"] + 1), ",".join(map(str, s["policy_version"])), f"{s['mean_reward']:.3f}",
                      f"{s['pass@1']:.3f}" if s["pass@1"] is not None else "-",
                      *(f"{s['components'][n]:.3f}" if n in s["components"] else "-" for n in names),
                      str(s["failed"]), str(s.get("gen_tokens", "-")), f"{s['rollout_s']:.1f}",
                      f"{s['train_s']:.1f}" if s["train_s"] is not None else "-",
                      f"{s['sync_s']:.1f}" if s["sync_s"] is not None else "-"])
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in lines)


def plot(steps: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["step"] + 1 for s in steps]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [s["mean_reward"] for s in steps], marker="o", label="mean reward")
    ax.plot(x, [s["pass@1"] for s in steps], marker=".", linestyle="--", label="pass@1")
    ax.set(xlabel="GRPO step", ylabel="reward", ylim=(-0.05, 1.05), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="gym_ray run config (policy: vllm)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--prompts-per-step", type=int, default=4, help="tasks per step; x num_repeats rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--off-policy-steps", type=int, default=0, choices=[0, 1, 2],
                   help="0: synchronous; 1 or 2: the next steps' rollouts generate while a step trains")
    p.add_argument("--tree", default=None, metavar="WIDTHxDEPTH",
                   help="tree rollouts (e.g. 2x2) with the same leaves per task as num_repeats independent ones")
    p.add_argument("--out", default="runs/learning_curve")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = p.parse_args()

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import ray
    import torch

    from gym_ray.config import load_config
    from gym_ray.integrations.trl_loop import LoopSettings, closed_loop
    from gym_ray.launch.deploy import connect_ray, deploy_all, teardown

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_config(args.config, args.overrides)
    tree = None
    if args.tree:
        from gym_ray.config import TreeConfig

        width, depth = (int(x) for x in args.tree.lower().split("x"))
        tree = TreeConfig(width=width, depth=depth, at="assistant_turn")
        if cfg.collect.num_repeats % tree.leaves:
            p.error(f"--tree {args.tree}: collect.num_repeats={cfg.collect.num_repeats} is not a multiple of "
                    f"its {tree.leaves} leaves")
        cfg.collect.num_repeats //= tree.leaves
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = LoopSettings(steps=args.steps, prompts_per_step=args.prompts_per_step, learning_rate=args.lr,
                            seed=args.seed, off_policy_steps=args.off_policy_steps, tree=tree)
    started = connect_ray(cfg, None)
    dep = None
    t0 = time.monotonic()
    try:
        dep = deploy_all(cfg, http=False)
        print(f"deployed {sorted(dep.apps)} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        tokens: list[int] = []  # per step: the loss mask's generated tokens, a tree's shared prefix once
        result = closed_loop(cfg, settings, out / "rollouts", dep.apps,
                             on_batch=lambda b: tokens.append(round(sum(map(sum, b["env_mask"])))))
        for step, n in zip(result.steps, tokens, strict=False):
            step["gen_tokens"] = n
    finally:
        if dep is not None:
            teardown(dep)
        if started:
            ray.shutdown()
    envs = ",".join(cfg.envs)
    print(f"\nTRL GRPO on gym_ray env {envs}: {args.prompts_per_step} tasks x {cfg.collect.num_repeats} "
          f"{f'trees of {tree.leaves} leaves' if tree else 'rollouts'} "
          f"per step, lr {args.lr}, seed {args.seed}, off-policy steps {args.off_policy_steps}, "
          f"{time.monotonic() - t0:.0f} s in all\n")
    print(table(result.steps))
    (out / "learning_curve.json").write_text(json.dumps({"settings": vars(args), "steps": result.steps}, indent=2))
    plot(result.steps, out / "learning_curve.png", f"TRL GRPO on gym_ray {envs} (SmolLM2-135M, CPU)")
    print(f"\n-> {out}/learning_curve.png, {out}/learning_curve.json, {out}/rollouts/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
