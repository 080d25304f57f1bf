"""The `gym-ray` command: a thin layer over the use cases (`gym_ray.launch`) and the Python API.

    gym-ray run CONFIG [key=value ...] [--address ADDR] [--keep] [--resume]   (exit 3: a monitor stopped it)
    gym-ray serve CONFIG [key=value ...] [--address ADDR] [--nemo-gym DIR]
    gym-ray collect CONFIG [key=value ...] --address ADDR [--resume]
    gym-ray metrics OUTPUT_DIR
    gym-ray check RUN_DIR            (exit 1 when the data breaks the contract, 2 when it cannot be read)
    gym-ray report RUN_DIR [-o report.html]
    gym-ray compare RUN_A RUN_B ... [--html compare.html]
    gym-ray reverify RUN -o NEW_RUN [--config RUN.yaml]   (re-score stored rollouts, no policy calls)
    gym-ray replay RUN ROLLOUT_ID [--config RUN.yaml]     (exit 1 when a tool result differs from the record)
    gym-ray export verl TASKS... OUT.parquet
    gym-ray export openrlhf TASKS... OUT.parquet|OUT.jsonl [--config RUN.yaml]
    gym-ray export nemo-gym TASKS... OUT.jsonl [--config RUN.yaml] [--agent-name NAME]
    gym-ray export trl TASKS... OUT.parquet|OUT.jsonl
    gym-ray envs                     (installed environment packages; what each adapter reaches)
    gym-ray init env NAME [--kind tool|step|code] [--dir DIR]   (a new environment package that runs at once)
    gym-ray env check NAME|PATH [--limit N]   (validate an environment in-process; exit 1 on errors)
"""

from __future__ import annotations

import argparse
import functools
import signal
import subprocess
import sys
import threading

from gym_ray.config import ConfigError, RunConfig, load_config
from gym_ray.models.default_model import ModelPrepareError
from gym_ray.tasks import TaskLoadError

SMOKE_PROMPT = "What is the capital of France?"
# A scripted policy with no script (e.g. `model.kind=scripted` on an env's config) gives this final answer.
DEFAULT_SCRIPTED_REPLY = "I don't know."


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix your config/data", printed as one line with exit status 2."""
    from gym_ray.collect.scheduler import ActorStartError
    from gym_ray.collect.sink import ResumeError
    from gym_ray.integrations.export import ExportError
    from gym_ray.models.scripted import ScriptError
    from gym_ray.rundir import RunDirError, RunInputError
    from gym_ray.serving.failures import DeploymentError

    return (ConfigError, TaskLoadError, ModelPrepareError, ResumeError, ActorStartError, ScriptError, RunDirError,
            DeploymentError, ExportError, RunInputError)


def _load(args: argparse.Namespace) -> RunConfig:
    cfg = load_config(args.config, args.overrides)
    if cfg.model.kind == "scripted" and not cfg.model.replies and not cfg.model.script:
        cfg.model.replies = [DEFAULT_SCRIPTED_REPLY]
    if getattr(args, "resume", False):
        cfg.collect.resume = True
    return cfg


def _print_endpoints(dep, out=sys.stdout) -> None:
    import ray

    from gym_ray.launch.deploy import dashboard_url

    for what, url in dep.urls.items():
        print(f"  {what:<28} {url}", file=out)
    print(f"  {'Ray dashboard':<28} {dashboard_url() or '(not running)'}", file=out)
    print(f"  {'Ray address':<28} {ray.get_runtime_context().gcs_address}", file=out)


def _run(args: argparse.Namespace) -> int:
    from gym_ray.launch.commands import exit_status, run

    def keep(dep) -> None:
        print("\n--keep: still serving (Ctrl-C to stop)", file=sys.stderr)
        _print_endpoints(dep, sys.stderr)
        _wait_forever()

    return exit_status(run(_load(args), args.config, address=args.address, keep=keep if args.keep else None))


def _serve(args: argparse.Namespace) -> None:
    from gym_ray.launch.commands import serve

    dep = serve(_load(args), args.config, address=args.address)
    print("gym-ray serve: running (Ctrl-C to stop)")
    _print_endpoints(dep)
    if args.nemo_gym:
        from gym_ray.integrations.nemo_gym.resources import write_nemo_gym_dir

        envs = {what.removeprefix("env "): url for what, url in dep.urls.items() if what.startswith("env ")}
        config = write_nemo_gym_dir(envs, args.nemo_gym)
        print(f"NeMo Gym: cd {config.parent} && ng_run '+config_paths=[config.yaml,<your model config>]'", flush=True)
    print(f"collect with: gym-ray collect {args.config} --address <Ray address above>", flush=True)
    _wait_forever()


def _collect_cmd(args: argparse.Namespace) -> int:
    from gym_ray.launch.commands import collect_served, exit_status

    return exit_status(collect_served(_load(args), args.config, address=args.address))


def _in_run_dir(command):
    """check, report, compare and metrics also write into the run directory: a place there that cannot be
    written (read-only, `.gym_ray` not a directory) is one line, like a part file that cannot be read."""

    @functools.wraps(command)
    def run(args: argparse.Namespace):
        from gym_ray.rundir import RunInputError

        try:
            return command(args)
        except OSError as e:
            raise RunInputError(f"{e.filename2 or e.filename}: cannot write ({e.strerror or e})") from None

    return run


@_in_run_dir
def _metrics(args: argparse.Namespace) -> None:
    from gym_ray.collect.cost import format_cost_table
    from gym_ray.collect.metrics import format_table, metrics_from_dir, write_metrics
    from gym_ray.rundir import RunDir
    from gym_ray.rundir.location import LEGACY_MANIFEST, LEGACY_METRICS

    run = RunDir.of(args.output_dir)
    summary = metrics_from_dir(run, args.pass_threshold)
    write_metrics(summary, run)
    if not run.remote and (run.path / LEGACY_MANIFEST).is_file():  # an old run's stale top-level copy
        (run.path / LEGACY_METRICS).unlink(missing_ok=True)
    print(format_table(summary))
    if cost := format_cost_table(summary):
        print()
        print(cost)


@_in_run_dir
def _check(args: argparse.Namespace) -> int:
    from gym_ray.report.checks import format_check, run_checks, write_check

    report = run_checks(args.run_dir, pass_threshold=args.pass_threshold)
    write_check(report)
    print(format_check(report))
    return 1 if report.contract_broken else 0


@_in_run_dir
def _report(args: argparse.Namespace) -> None:
    from gym_ray.report.finish import write_report

    print(f"report: {write_report(args.run_dir, args.output, pass_threshold=args.pass_threshold)}")


@_in_run_dir
def _compare(args: argparse.Namespace) -> None:
    from gym_ray.report.compare import compare_runs, format_compare, write_compare_html

    result = compare_runs(args.runs, pass_threshold=args.pass_threshold, seed=args.seed)
    print(format_compare(result))
    if args.html:
        print(f"html: {write_compare_html(result, args.html)}")


@_in_run_dir
def _reverify(args: argparse.Namespace) -> None:
    from gym_ray.reverify import format_reverified, reverify_run

    print(format_reverified(reverify_run(args.run_dir, args.output, args.config)))


def _replay(args: argparse.Namespace) -> int:
    from gym_ray.reverify import format_replay, replay_rollout

    result = replay_rollout(args.run_dir, args.rollout_id, args.config)
    print(format_replay(result))
    return 1 if result.divergences else 0


def _wait_forever() -> None:
    """Until Ctrl-C or SIGTERM. Both handlers are set here: a process started with SIGINT ignored (a background
    job of a non-interactive shell, a test runner's worker) inherits that, and would never stop on Ctrl-C."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def _models_prepare(args: argparse.Namespace) -> None:
    from gym_ray.models.default_model import prepare_default_model

    print(prepare_default_model(force=args.force))


def _generate(args: argparse.Namespace) -> None:
    from gym_ray.models.offline import generate_chat

    out = generate_chat(args.prompt, model=args.model, max_tokens=args.max_tokens)
    print(f"prompt: {args.prompt}\nreply:  {out['text']}\n({len(out['token_ids'])} tokens, {out['finish_reason']})")


def _envs(args: argparse.Namespace) -> None:
    from pathlib import Path

    from gym_ray.catalogue import installed, markdown, reachable, render, shipped, splice

    if args.markdown is None:
        print(render(installed(), reachable(Path.cwd())))
        return
    readme = Path(args.markdown) / "environments" / "README.md"
    section = markdown(shipped(Path(args.markdown)), reachable(Path(args.markdown), measured_only=True))
    if args.write:
        readme.write_text(splice(readme.read_text(), section))
        print(f"wrote the catalogue of {readme}")
    else:
        print(section)


def _init_env(args: argparse.Namespace) -> int:
    from gym_ray.scaffold import ScaffoldError, init_env, next_steps

    try:
        folder = init_env(args.name, args.kind, args.dir)
    except ScaffoldError as e:
        print(f"gym-ray: error: {e}", file=sys.stderr)
        return 2
    installed = False
    if not args.no_install:  # editable, into this interpreter's environment: `server: <name>` resolves at once
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(folder)],
                             capture_output=True, text=True)
        installed = pip.returncode == 0
        if not installed:
            print(f"gym-ray: warning: pip install -e {folder} failed: {pip.stderr.strip()[-300:]}", file=sys.stderr)
    print(next_steps(folder, args.name, installed))
    return 0


def _env_check(args: argparse.Namespace) -> int:
    from gym_ray.envcheck import EnvCheckInputError, check_env, format_report

    try:
        report = check_env(args.target, args.limit)
    except EnvCheckInputError as e:
        print(f"gym-ray: error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 1 if report.errors else 0


def _export_verl(args: argparse.Namespace) -> None:
    from gym_ray.integrations.export import export_verl

    *tasks, out = args.files
    if not tasks:
        raise TaskLoadError("export verl: give the task files, then the output .parquet")
    n = export_verl(tasks, out, agent_name=args.agent_name, split=args.split)
    print(f"wrote {n} tasks to {out} (VeRL: data.train_files={out})")


def _export_openrlhf(args: argparse.Namespace) -> None:
    from gym_ray.integrations.export import export_openrlhf

    *tasks, out = args.files
    if not tasks:
        raise TaskLoadError("export openrlhf: give the task files, then the output .parquet or .jsonl")
    n = export_openrlhf(tasks, out, config=args.config)
    print(f"wrote {n} tasks to {out} (OpenRLHF: --data.prompt_dataset {out} --data.input_key prompt "
          "--data.label_key label --data.apply_chat_template)")


def _export_trl(args: argparse.Namespace) -> None:
    from gym_ray.integrations.export import export_trl

    *tasks, out = args.files
    if not tasks:
        raise TaskLoadError("export trl: give the task files, then the output .parquet or .jsonl")
    n = export_trl(tasks, out)
    print(f"wrote {n} tasks to {out} (TRL: train_dataset=load_dataset({out.rsplit('.', 1)[-1]!r}, "
          f"data_files={out!r})['train'], rollout_func=gym_ray.integrations.trl.GymRayRollouts(...))")


def _export_nemo_gym(args: argparse.Namespace) -> None:
    from gym_ray.integrations.nemo_gym.tasks import export_nemo_gym

    *tasks, out = args.files
    if not tasks:
        raise TaskLoadError("export nemo-gym: give the task files, then the output .jsonl")
    n = export_nemo_gym(tasks, out, config=args.config, agent_name=args.agent_name)
    print(f"wrote {n} tasks to {out} (NeMo Gym: ng_collect_rollouts +input_jsonl_fpath={out})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gym-ray", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    envs = sub.add_parser("envs", help="list the installed environment packages and what each adapter reaches")
    envs.add_argument("--markdown", metavar="ROOT", nargs="?", const=".", default=None,
                      help="print ROOT/environments/README.md's catalogue section, generated from the packages")
    envs.add_argument("--write", action="store_true", help="with --markdown: rewrite that section in place")
    envs.set_defaults(func=_envs)
    init = sub.add_parser("init", help="write a new package: `init env NAME` (an environment that runs at once)")
    init_env = init.add_subparsers(dest="init_what", required=True).add_parser(
        "env", help="a new environment package (server, config, five tasks, README, a test)")
    init_env.add_argument("name", help="the environment's name (lowercase, digits, underscores)")
    init_env.add_argument("--kind", default="tool",
                          help="tool calling, a reset/step game, or code run in the sandbox (default: tool)")
    init_env.add_argument("--dir", default="environments", help="the folder to write it under (default: environments)")
    init_env.add_argument("--no-install", action="store_true",
                          help="only write the package (default: also pip install -e it into this environment)")
    init_env.set_defaults(func=_init_env)
    env = sub.add_parser("env", help="environment tools: `env check NAME|PATH`")
    env_check = env.add_subparsers(dest="env_command", required=True).add_parser(
        "check", help="validate an environment in-process before a long run (exit 1 on errors)")
    env_check.add_argument("target", metavar="NAME|PATH", help="an environment name, its folder or a run config")
    env_check.add_argument("--limit", type=int, default=50, help="round trips on at most this many tasks")
    env_check.set_defaults(func=_env_check)

    def with_config(name: str, help: str, func) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("config", help="run config YAML (e.g. environments/weather/config.yaml)")
        c.add_argument("overrides", nargs="*", help="key=value overrides, e.g. collect.num_repeats=8")
        c.add_argument("--address", default=None, help="Ray cluster to join (default: a private local Ray)")
        c.set_defaults(func=func)
        return c

    run = with_config("run", "deploy, collect rollouts into Parquet, print metrics, tear down", _run)
    run.add_argument("--keep", action="store_true", help="keep the deployments serving after collecting")
    run.add_argument("--resume", action="store_true", help="complete a crashed run in the same output_dir")
    srv = with_config("serve", "deploy the model(s) and environments and keep serving", _serve)
    srv.add_argument("--nemo-gym", default=None, metavar="DIR",
                     help="write a NeMo Gym config (and server dir) serving each env to NeMo Gym on its own port")
    col = with_config("collect", "collect against deployments already running (gym-ray serve)", _collect_cmd)
    col.add_argument("--resume", action="store_true", help="complete a crashed run in the same output_dir")
    met = sub.add_parser("metrics", help="recompute the metrics table (and .gym_ray/metrics.json) from a run's Parquet")
    met.add_argument("output_dir")
    met.add_argument("--pass-threshold", type=float, default=1.0, help="reward counted as a pass (pass@k)")
    met.set_defaults(func=_metrics)
    chk = sub.add_parser("check", help="health checks of a run's rows (exit 1 when the data breaks the contract)")
    chk.add_argument("run_dir")
    chk.add_argument("--pass-threshold", type=float, default=1.0, help="reward counted as a pass")
    chk.set_defaults(func=_check)
    rep = sub.add_parser("report", help="write a run's self-contained report.html (plots, rollout browser)")
    rep.add_argument("run_dir")
    rep.add_argument("-o", "--output", default=None, help="where (default: RUN_DIR/.gym_ray/report.html)")
    rep.add_argument("--pass-threshold", type=float, default=1.0, help="reward counted as a pass")
    rep.set_defaults(func=_report)
    cmp_ = sub.add_parser("compare", help="reward and pass@k of runs against the first, with 95%% intervals")
    cmp_.add_argument("runs", nargs="+", metavar="RUN_DIR")
    cmp_.add_argument("--html", default=None, help="also write the comparison as HTML here")
    cmp_.add_argument("--pass-threshold", type=float, default=1.0, help="reward counted as a pass")
    cmp_.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp_.set_defaults(func=_compare)
    rev = sub.add_parser("reverify", help="re-score a run's stored rollouts with a verifier into a new run directory")
    rev.add_argument("run_dir")
    rev.add_argument("-o", "--output", required=True, metavar="NEW_RUN", help="the new run directory")
    rev.add_argument("--config", default=None, help="run config whose envs verify (default: the run's own)")
    rev.set_defaults(func=_reverify)
    rep_ = sub.add_parser("replay", help="make a rollout's tool calls again and report results that differ")
    rep_.add_argument("run_dir")
    rep_.add_argument("rollout_id")
    rep_.add_argument("--config", default=None, help="run config of its env (default: the run's own)")
    rep_.set_defaults(func=_replay)
    exp = sub.add_parser("export", help="write task files in a trainer's dataset format")
    esub = exp.add_subparsers(dest="export_format", required=True)
    ev = esub.add_parser("verl", help="VeRL RLHFDataset Parquet for gym_ray's agent loop")
    ev.add_argument("files", nargs="+", metavar="TASKS... OUT.parquet")
    ev.add_argument("--agent-name", default="gym_ray", help="agent_name column (the registered agent loop)")
    ev.add_argument("--split", default="train", help="extra_info.split")
    ev.set_defaults(func=_export_verl)
    eo = esub.add_parser("openrlhf", help="OpenRLHF prompt dataset for gym_ray's AgentExecutor")
    eo.add_argument("files", nargs="+", metavar="TASKS... OUT")
    eo.add_argument("--config", help="the run config the executor gets as GYM_RAY_CONFIG (checks each row's env)")
    eo.set_defaults(func=_export_openrlhf)
    et = esub.add_parser("trl", help="TRL GRPOTrainer prompt dataset for gym_ray's rollout_func")
    et.add_argument("files", nargs="+", metavar="TASKS... OUT")
    et.set_defaults(func=_export_trl)
    en = esub.add_parser("nemo-gym", help="NeMo Gym task JSONL (responses_create_params, agent_ref) for its collector")
    en.add_argument("files", nargs="+", metavar="TASKS... OUT.jsonl")
    en.add_argument("--config", help="run config whose envs the rows use (default: gym_ray's shipped envs)")
    en.add_argument("--agent-name", default=None, help="agent_ref.name of every row (default: <env>_simple_agent)")
    en.set_defaults(func=_export_nemo_gym)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """argparse stops collecting `key=value` overrides at the first option (`serve CFG --address A k=v`);
    overrides may come anywhere after the config, so collect the ones it left over."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rc = args.func(args)
    except _user_errors() as e:
        print(f"gym-ray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gym-ray: interrupted (finished groups are on disk; --resume completes the run)", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
