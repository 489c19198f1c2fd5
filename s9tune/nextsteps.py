"""The lines a command ends with that say what to type next, with its own paths filled in, so
a new user never has to compose them: after a search, `results` and `retrain`; after an
interrupted retrain, the same retrain with `--resume`; and how to open TensorBoard and
optuna-dashboard."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from s9tune.options import RetrainOptions
from s9tune.storage import Folder, is_uri


def tensorboard_hint(experiment: str) -> str:
    folder = Folder.parse(experiment)
    if folder.is_local:
        return f"tensorboard --logdir {folder.base}"
    local = f"searches/{folder.name}"
    if folder.base.startswith("s3://"):
        # TensorBoard reads s3:// itself only with boto3 installed (S3_ENDPOINT for other servers)
        return f"aws s3 sync {folder.base} {local} && tensorboard --logdir {local}"
    if folder.base.startswith("gs://"):
        return f"gcloud storage rsync --recursive {folder.base} {local} && tensorboard --logdir {local}"
    return f"copy {folder.base} to a local folder, then: tensorboard --logdir that folder"


def dashboard_hint(experiment: str) -> str:
    """optuna-dashboard on the search's Optuna journal (search/searcher/journal.py), which it reads from a
    local file only."""
    # here, not at the top, which `s9tune --help` reaches: journal.py loads Optuna, ~0.17 s CPU at
    # import (median of 5, 2-core VM)
    from s9tune.search.searcher.journal import JOURNAL

    folder = Folder.parse(experiment)
    if folder.is_local:
        return f"optuna-dashboard {folder.base}/{JOURNAL}"
    return f"copy {folder.base}/{JOURNAL} to this machine, then: optuna-dashboard {JOURNAL}"


def after_search(experiment: str, data_dir: Path | None, address: str | None) -> list[str]:
    """`results` and `retrain` for this experiment. A retrain on a cluster, or of an experiment
    on a URI, writes beside the experiment: every node reached that storage during the search."""
    base, sep, query = experiment.partition("?")
    on_cluster = bool(address or os.environ.get("RAY_ADDRESS"))
    out = f"{base}-retrain{sep}{query}" if on_cluster or is_uri(experiment) else f"runs/{Path(base).name}"
    retrain = ["s9tune", "retrain", experiment]
    retrain += ["--data-dir", str(data_dir)] if data_dir else []
    retrain += ["--out", out] + (["--address", address] if address else [])
    return [shlex.join(["s9tune", "results", experiment]), shlex.join(retrain)]


def search_resume(space: Path, experiment: str) -> str:
    from s9tune.search.experiment.record import ExperimentRef  # Optuna too: as in dashboard_hint

    ref = ExperimentRef.parse(experiment)
    return f"s9tune search --space {space} --storage {ref.storage} --name {ref.name} --resume"


def retrain_resume(opts: RetrainOptions) -> str:
    """The retrain `opts` describes, with --resume: the same config, since resume refuses another."""
    argv = ["s9tune", "retrain", opts.experiment, "--out", str(opts.out)]
    argv += ["--epochs", str(opts.epochs), "--seeds", str(opts.seeds)]
    argv += [a for kv in opts.sets for a in ("--set", kv)]
    for flag, value in (("--data-dir", opts.data_dir), ("--address", opts.address)):
        argv += [flag, str(value)] if value is not None else []
    argv += ["--target-layer", opts.target_layer]
    for flag, number in (("--cpus-per-run", opts.cpus_per_run), ("--gpus-per-run", opts.gpus_per_run)):
        argv += [flag, f"{number:g}"] if number is not None else []
    return shlex.join([*argv, "--resume"])
