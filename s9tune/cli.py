"""`s9tune` command line. Subcommand modules are imported inside handlers so --help is fast
and `s9tune train` works without Ray. Any S9Error becomes one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from s9tune import __version__
from s9tune.errors import OneLineParser, S9Error

logger = logging.getLogger("s9tune")

MAX_NUM_ITER = 100_000  # lr-find steps


# -- shared pieces --------------------------------------------------------------------
def _add_data_dir(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        required=required,
        help="folder with cifar-10-batches-py/ (or its tarball); downloaded there if absent. "
        "Default: $S9TUNE_DATA_DIR, else ~/.cache/s9tune/cifar10",
    )


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML file of TrainConfig values")
    _add_sets(p)


def _add_sets(p: argparse.ArgumentParser) -> None:
    what = "override one TrainConfig value (repeatable), e.g. --set max_lr=0.2"
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=what)


def _add_address(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--address",
        default=None,
        help=f"join a running Ray cluster (auto or HOST:PORT); {what}. "
        "Default: $RAY_ADDRESS, else start Ray in-process",
    )


def _load_splits(cfg, data_dir: Path | None):
    from s9tune.data import load_splits

    return load_splits(data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)


# -- handlers -------------------------------------------------------------------------
def cmd_summary(args: argparse.Namespace) -> int:
    from s9tune.config import LIMITS
    from s9tune.errors import ConfigError
    from s9tune.model import summary_table

    if not 1 <= args.width <= LIMITS["width"]:
        raise ConfigError(f"--width {args.width}: must lie in [1, {LIMITS['width']}]")
    print(summary_table(args.width))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from s9tune.analysis.metrics import seed_test_line
    from s9tune.config import load_config
    from s9tune.outdir import prepare_out_dir
    from s9tune.runs import train_to_dir, write_metrics

    cfg = load_config(args.config, args.sets)
    splits = _load_splits(cfg, args.data_dir)  # data errors surface before anything is written
    out = prepare_out_dir(args.out, kind="train", force=args.force, resume=args.resume, protect=(args.data_dir,))
    m = train_to_dir(cfg, splits, out, resume=args.resume).metrics
    write_metrics(out, m)
    if m["status"] == "diverged":
        print(f"Run diverged (non-finite loss) after {m['epochs']} epoch(s); see {out / 'metrics.jsonl'}")
        return 0
    print(seed_test_line(m["test_loss"], m["test_correct"], m["test_images"]))
    if m["val_accuracy"] is not None:
        print(f"Validation accuracy: {100 * m['val_accuracy']:.2f}%")
    print(f"{m['train_images_per_s']:.0f} training images/s, {m['wall_s']:.1f} s in all. Run folder: {out}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from s9tune.config import load_config
    from s9tune.errors import ConfigError
    from s9tune.lrfind import run_lr_find
    from s9tune.outdir import prepare_out_dir

    if not (0 < args.start_lr < args.end_lr < math.inf):
        raise ConfigError(f"--start-lr {args.start_lr} / --end-lr {args.end_lr}: need 0 < start < end, both finite")
    if not 10 <= args.num_iter <= MAX_NUM_ITER:
        raise ConfigError(f"--num-iter {args.num_iter}: must lie in [10, {MAX_NUM_ITER:,}]")
    cfg = load_config(args.config, args.sets)
    splits = _load_splits(cfg, args.data_dir)
    out = prepare_out_dir(args.out, kind="lr-find", force=args.force, protect=(args.data_dir,))
    res = run_lr_find(cfg, splits, out, start_lr=args.start_lr, end_lr=args.end_lr, num_iter=args.num_iter)
    print(
        f"Suggested max LR: {res.suggested_max_lr:.3g} ({res.method.split(':')[0]}); "
        f"loss is lowest at LR {res.lr_at_min_loss:.3g}"
    )
    if res.lr_at_min_loss >= res.lrs[-1]:
        print(f"The loss was still falling at the end of the range: try a larger --end-lr than {args.end_lr:g}.")
    print(f"Plot: {out / 'lr_find.png'}  Details: {out / 'lr_find.json'}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from s9tune.search.space.space import check_resources, load_space

    space = load_space(args.space).with_num_samples(args.num_samples)  # validated before Ray starts
    space = space.with_resources(args.cpus_per_trial, args.gpus_per_trial)
    check_resources(space.cpus_per_trial, space.gpus_per_trial, where="--cpus-per-trial/--gpus-per-trial")
    from s9tune.nextsteps import after_search, dashboard_hint, search_resume, tensorboard_hint
    from s9tune.search.execution.runner import run_search
    from s9tune.search.experiment.export import format_results

    outcome = run_search(
        space,
        args.data_dir,
        storage=args.storage,
        name=args.name,
        address=args.address,
        resume=args.resume,
        dashboard=args.dashboard,
        ray_to_console=args.verbose > 0,
        progress=not args.quiet,
    )
    print()
    print(format_results(outcome.result))
    print(f"\nExperiment: {outcome.experiment}")
    print(f"TensorBoard: {tensorboard_hint(outcome.experiment)}")
    print(f"Optuna dashboard: {dashboard_hint(outcome.experiment)}")
    if outcome.log:
        print(f"Ray's log: {outcome.log}")
    if outcome.interrupted:
        print(f"Interrupted. Continue with: {search_resume(args.space, outcome.experiment)}")
        return 130
    print("Next:\n" + "\n".join(f"  {cmd}" for cmd in after_search(outcome.experiment, args.data_dir, args.address)))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from s9tune.search.experiment.export import BEST_CONFIG, export_experiment, format_results

    exp = export_experiment(args.experiment)
    print(format_results(exp))
    try:
        exp.best()
        print(f"\nBest config: {exp.path}/{BEST_CONFIG}")
    except S9Error as exc:
        print(f"\n{exc}")
    return 0


def _register_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="hyperparameter search with Ray Tune (Optuna TPE; successive halving or ASHA)")
    p.add_argument("--space", type=Path, required=True, help="search-space YAML (see search_spaces/)")
    _add_data_dir(p)
    p.add_argument("--num-samples", type=int, default=None, help="number of trials (overrides the file)")
    p.add_argument("--name", default=None, help="experiment name (default: SPACE-DATE-TIME)")
    p.add_argument(
        "--storage", default=None, help="folder or URI (s3://, gs://) holding experiments (default: ./searches)"
    )
    _add_address(p, "the trials run there")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted experiment --name. This loads Tune's pickled state, which can run code "
        "stored in it: resume only experiments you trust (results and retrain read JSON only)",
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="with Ray started in-process: its dashboard, on 127.0.0.1 only (needs ray[default])",
    )
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (overrides the file)")
    p.add_argument(
        "--gpus-per-trial", type=float, default=None, help="GPU share per trial, e.g. 0.25 (overrides the file)"
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("results", help="leaderboard, parameter importance and best config of a search")
    p.add_argument("experiment", help="STORAGE/NAME of a search (a folder or a URI)")
    p.set_defaults(func=cmd_results)


def _print_seed_style(result: dict) -> None:
    from s9tune.analysis.analyze import seed_style_lines

    print("\n".join(seed_style_lines(result)))


def cmd_retrain(args: argparse.Namespace) -> int:
    from s9tune.nextsteps import retrain_resume
    from s9tune.retrain import run_retrain, summary_lines

    r = run_retrain(
        args.experiment,
        args.data_dir,
        args.out,
        epochs=args.epochs,
        seeds=args.seeds,
        sets=args.sets,
        force=args.force,
        resume=args.resume,
        target_layer=args.target_layer,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        ray_to_console=args.verbose > 0,
        progress=not args.quiet,
    )
    again = retrain_resume(vars(args))
    if r.interrupted:
        print(f"\nInterrupted. Continue with: {again}")
        return 130
    print("\n" + "\n".join(summary_lines(r)))
    if r.failed:
        print(f"{len(r.failed)} seed(s) failed; {again} retries them.")
    if r.log:
        print(f"Ray's log: {r.log}")
    return 1 if r.failed else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from s9tune.analysis.from_checkpoint import analyze_checkpoint

    result = analyze_checkpoint(
        args.checkpoint, args.data_dir, args.out, force=args.force, target_layer=args.target_layer, width=args.width
    )
    _print_seed_style(result)
    print(f"Report: {Path(args.out).resolve() / 'report.html'}")
    return 0


def _register_analysis(sub: argparse._SubParsersAction) -> None:
    from s9tune.analysis import DEFAULT_TARGET_LAYER

    layer_help = f"GradCAM target layer (default {DEFAULT_TARGET_LAYER}: the last residual block, the deepest 4x4 map)"
    p = sub.add_parser("retrain", help="retrain a search's best trial on train+val, test it and write a report")
    p.add_argument("experiment", help="STORAGE/NAME of a search (a folder or the storage URI the search used)")
    _add_data_dir(p)
    p.add_argument("--epochs", type=int, default=24, help="epochs of the retrain schedule (default 24)")
    p.add_argument("--seeds", type=int, default=1, help="retrain N seeds and report mean ± std")
    _add_sets(p)
    p.add_argument("--out", required=True, help="run folder to create: a local path or a URI (s3://, gs://, file://)")
    p.add_argument("--force", action="store_true", help="replace --out if it holds a previous run")
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted retrain in --out, each seed from its checkpoint"
    )
    p.add_argument("--target-layer", default=DEFAULT_TARGET_LAYER, help=layer_help)
    _add_address(p, "the seeds run there")
    p.add_argument("--cpus-per-run", type=float, default=None, help="CPUs per seed (default: a GPU's share)")
    p.add_argument("--gpus-per-run", type=float, default=None, help="GPUs per seed (default: 1 if there are GPUs)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("analyze", help="analysis and report for any saved checkpoint, without retraining")
    p.add_argument(
        "checkpoint", help="a .pt file written by train, retrain or a search trial: a path or a URI (s3://, gs://)"
    )
    _add_data_dir(p)
    p.add_argument("--out", type=Path, required=True, help="folder for plots and report")
    p.add_argument("--force", action="store_true", help="replace --out if it holds files")
    p.add_argument("--target-layer", default=DEFAULT_TARGET_LAYER, help=layer_help)
    p.add_argument("--width", type=int, default=None, help="fail unless the checkpoint has this width")
    p.set_defaults(func=cmd_analyze)


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="s9tune",
        description="Train, search (Ray Tune + Optuna, successive halving or ASHA), retrain and analyse "
        "the S9 ResNet on CIFAR-10.",
    )
    parser.add_argument("--version", action="version", version=f"s9tune {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output; a search also shows Ray's and Tune's (-vv for debug)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="print the model's layer table and parameter count")
    p.add_argument("--width", type=int, default=64, help="channel width of the prep layer (64 = the seed's net)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train one config and write a run folder")
    _add_data_dir(p)
    _add_config(p)
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--force", action="store_true", help="replace --out if it holds a previous run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="LR range test (torch-lr-finder): plot and suggested max LR")
    _add_data_dir(p)
    _add_config(p)
    p.add_argument("--out", type=Path, required=True, help="folder for lr_find.png and lr_find.json")
    p.add_argument("--force", action="store_true", help="replace --out if it holds files")
    p.add_argument("--start-lr", type=float, default=1e-5)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--num-iter", type=int, default=100)
    p.set_defaults(func=cmd_lr_find)

    _register_search(sub)
    _register_analysis(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("s9tune")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # a bad command line is an S9Error too
        _setup_logging(args.verbose, args.quiet)
        return int(args.func(args) or 0)
    except S9Error as exc:
        print(f"s9tune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("s9tune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
