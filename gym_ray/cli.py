"""The `gym-ray` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys

from gym_ray.config import ConfigError
from gym_ray.models.default_model import ModelPrepareError
from gym_ray.tasks import TaskLoadError

SMOKE_PROMPT = "What is the capital of France?"


def _models_prepare(args: argparse.Namespace) -> None:
    from gym_ray.models.default_model import prepare_default_model

    print(prepare_default_model(force=args.force))


def _generate(args: argparse.Namespace) -> None:
    from gym_ray.models.offline import generate_chat

    out = generate_chat(args.prompt, model=args.model, max_tokens=args.max_tokens)
    print(f"prompt: {args.prompt}\nreply:  {out['text']}\n({len(out['token_ids'])} tokens, {out['finish_reason']})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gym-ray", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="manage policy model checkpoints")
    msub = models.add_subparsers(dest="models_command", required=True)
    prep = msub.add_parser("prepare", help="build the embedded default model (once) and print its path")
    prep.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    prep.set_defaults(func=_models_prepare)

    gen = sub.add_parser("generate", help="greedy reply from a model through vLLM in this process (smoke check)")
    gen.add_argument("--prompt", default=SMOKE_PROMPT)
    gen.add_argument("--model", default=None, help="checkpoint path (default: the embedded default)")
    gen.add_argument("--max-tokens", type=int, default=32)
    gen.set_defaults(func=_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, TaskLoadError, ModelPrepareError) as e:
        print(f"gym-ray: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
