"""`s9tune` command line: a thin shell over the Python API (s9tune/api.py). Each handler fills
an options object from the flags, calls the API and prints what it returns. Any S9Error becomes
one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from s9tune import __version__, api
from s9tune.analysis import DEFAULT_TARGET_LAYER
from s9tune.analysis.seedlog import seed_style_lines, seed_test_line
from s9tune.errors import OneLineParser, S9Error
from s9tune.nextsteps import after_search, dashboard_hint, retrain_resume, search_resume, tensorboard_hint
from s9tune.options import AnalyzeOptions, LRFindOptions, RetrainOptions, SearchOptions, TrainOptions

logger = logging.getLogger("s9tune")


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


# -- handlers: each fills its options from the flags, calls the API, prints what it got --
Options = TypeVar("Options", TrainOptions, LRFindOptions, SearchOptions, RetrainOptions, AnalyzeOptions)


def options_from(cls: type[Options], args: argparse.Namespace) -> Options:
    """The command's options from its flags: each flag's dest is the field of the same name;
    -v sends Ray's output to the console, -q turns s9tune's progress off."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    if "sets" in given:
        given["sets"] = tuple(given["sets"])
    derived = {"ray_to_console": args.verbose > 0, "progress": not args.quiet}
    return cls(**given, **{k: v for k, v in derived.items() if k in {f.name for f in fields(cls)}})


@dataclass(frozen=True)
class Reply:
    """What a command prints when its work is done (main prints it, in one place), and its exit code."""

    lines: list[str]
    code: int = 0


def cmd_summary(args: argparse.Namespace) -> Reply:
    return Reply([api.summary(args.width)])


def cmd_train(args: argparse.Namespace) -> Reply:
    m = api.train(options_from(TrainOptions, args))
    out = m["run_dir"]
    if m["status"] == "diverged":
        return Reply(
            [f"Run diverged (non-finite loss) after {m['epochs']} epoch(s); see {Path(out) / 'metrics.jsonl'}"]
        )
    val = m["val_accuracy"]
    return Reply(
        [
            seed_test_line(m["test_loss"], m["test_correct"], m["test_images"]),
            *([f"Validation accuracy: {100 * val:.2f}%"] if val is not None else []),
            f"{m['train_images_per_s']:.0f} training images/s, {m['wall_s']:.1f} s in all. Run folder: {out}",
        ]
    )


def cmd_lr_find(args: argparse.Namespace) -> Reply:
    opts = options_from(LRFindOptions, args)
    res = api.lr_find(opts)
    out = Path(opts.out).resolve()
    falling = res.lr_at_min_loss >= res.lrs[-1]
    return Reply(
        [
            f"Suggested max LR: {res.suggested_max_lr:.3g} ({res.method.split(':')[0]}); "
            f"loss is lowest at LR {res.lr_at_min_loss:.3g}",
            *(
                [f"The loss was still falling at the end of the range: try a larger --end-lr than {args.end_lr:g}."]
                if falling
                else []
            ),
            f"Plot: {out / 'lr_find.png'}  Details: {out / 'lr_find.json'}",
        ]
    )


def cmd_search(args: argparse.Namespace) -> Reply:
    opts = options_from(SearchOptions, args)
    exp = api.run_search(opts)
    lines = [
        "",
        exp.table(),
        f"\nExperiment: {exp.path}",
        f"TensorBoard: {tensorboard_hint(exp.path)}",
        f"Optuna dashboard: {dashboard_hint(exp.path)}",
    ]
    if exp.log:
        lines.append(f"Ray's log: {exp.log}")
    if exp.interrupted:
        return Reply([*lines, f"Interrupted. Continue with: {search_resume(opts.space, exp.path)}"], 130)
    return Reply([*lines, "Next:", *(f"  {cmd}" for cmd in after_search(exp.path, opts.data_dir, opts.address))])


def cmd_results(args: argparse.Namespace) -> Reply:
    exp = api.results(args.experiment)
    try:
        exp.pick  # noqa: B018 - raises if no trial finished its schedule: then there is no best config
        last = f"\nBest config: {exp.best_config_file}"
    except S9Error as exc:
        last = f"\n{exc}"
    return Reply([exp.table(), last])


def _add_out(p: argparse.ArgumentParser, what: str, *, holds: str, kind: type = Path) -> None:
    p.add_argument("--out", type=kind, required=True, help=what)
    p.add_argument("--force", action="store_true", help=f"replace --out if it holds {holds} (s9tune's own only)")


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


def cmd_retrain(args: argparse.Namespace) -> Reply:
    opts = options_from(RetrainOptions, args)
    r = api.retrain(opts)
    # here, as api.py's note says: retraining loads torch (~1.3 s CPU at import, median of 5, 2-core VM)
    from s9tune.retraining import summary_lines

    again = retrain_resume(opts)
    if r.interrupted:
        return Reply([f"\nInterrupted. Continue with: {again}"], 130)
    lines = ["\n" + "\n".join(summary_lines(r))]
    if r.failed:
        lines.append(f"{len(r.failed)} seed(s) failed; {again} retries them.")
    if r.log:
        lines.append(f"Ray's log: {r.log}")
    return Reply(lines, 1 if r.failed else 0)


def cmd_analyze(args: argparse.Namespace) -> Reply:
    opts = options_from(AnalyzeOptions, args)
    lines = seed_style_lines(api.analyze(opts))
    return Reply([*lines, f"Report: {Path(opts.out).resolve() / 'report.html'}"])


def _register_analysis(sub: argparse._SubParsersAction) -> None:
    layer_help = f"GradCAM target layer (default {DEFAULT_TARGET_LAYER}: the last residual block, the deepest 4x4 map)"
    p = sub.add_parser("retrain", help="retrain a search's best trial on train+val, test it and write a report")
    p.add_argument("experiment", help="STORAGE/NAME of a search (a folder or the storage URI the search used)")
    _add_data_dir(p)
    epochs = RetrainOptions.epochs
    p.add_argument("--epochs", type=int, default=epochs, help=f"epochs of the retrain schedule (default {epochs})")
    p.add_argument("--seeds", type=int, default=1, help="retrain N seeds and report mean ± std")
    _add_sets(p)
    _add_out(p, "run folder to create: a local path or a URI (s3://, gs://, file://)", holds="a previous run", kind=str)
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
    _add_out(p, "folder for plots and report", holds="files")
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
    p.add_argument(
        "--width", type=int, default=api.TrainConfig.width, help="channel width of the prep layer (64 = the seed's net)"
    )
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train one config and write a run folder")
    _add_data_dir(p)
    _add_config(p)
    _add_out(p, "run folder to create", holds="a previous run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="LR range test (torch-lr-finder): plot and suggested max LR")
    _add_data_dir(p)
    _add_config(p)
    _add_out(p, "folder for lr_find.png and lr_find.json", holds="files")
    p.add_argument("--start-lr", type=float, default=LRFindOptions.start_lr)
    p.add_argument("--end-lr", type=float, default=LRFindOptions.end_lr)
    p.add_argument("--num-iter", type=int, default=LRFindOptions.num_iter)
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
        reply = args.func(args)
        print("\n".join(reply.lines))
        return reply.code
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
