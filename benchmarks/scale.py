"""The real search machinery at cluster scale, on this machine: a local Ray with many logical
CPUs, the space of scale_space.yaml (the default when the runs were measured: ASHA, a fixed
re-evaluation step and 24 epochs) with 100, 300 and 1,000
configs, and a stand-in trainable (scale_trainable.py: a few ms of sleep per "epoch", reporting
through the real trial's reporting). Everything else runs as shipped: the searcher and its
Optuna journal, ASHA, the reruns, the callbacks (console, HParams, journal sync), the export.

Per size, three searches, each driver in its own process (measured from outside with psutil,
and by its own getrusage):
  * plain Tune: the same trainable, Ray's own ASHA, Tune's random search and default loggers,
    no s9tune searcher or callbacks: the baseline of driver CPU per finished trial;
  * the s9tune search to the end: wall against the ideal (the sum of the sleeps / slots), the
    driver's CPU per finished trial, peak RSS and open descriptors, the journal's bytes and
    lines, the console's lines, then `s9tune results` and a TensorBoard server listing every
    HParams run;
  * the s9tune search SIGKILLed (driver and its Ray) once half the configs have started, then
    `--resume`d: seconds from the resume to its first new trial, and runs lost, repeated or
    wrongly promoted (reading the trial files and the journal; scale_checks.py).

    python benchmarks/scale.py --configs 100,300,1000 --json benchmarks/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scale_checks import (
    check_runs,
    checkpoints_per_trial,
    count_lines,
    event_bytes,
    journal_replay_seconds,
    project,
    results_seconds,
    tensorboard_available,
    tensorboard_seconds,
    uri_journal_copies,
)
from scale_watch import Watch, launch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = REPO / "benchmarks" / "scale_space.yaml"  # the default of the measured runs: ASHA and reruns


def tiny_data(folder: Path) -> Path:
    """CIFAR-10's file layout with a few images: the driver loads it once; the stand-in trainable
    never reads it."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {b"labels": rng.integers(0, 10, 20).tolist(), b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8)}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return folder


def scale_space(path: Path, configs: int) -> Any:
    """The space file's search with `configs` configs, one logical CPU and no GPU per trial."""
    from s9tune.search.space.space import load_space

    return load_space(path).with_num_samples(configs).with_resources(1, 0)


# -- the driver processes ------------------------------------------------------------------
def _start_ray(slots: int) -> None:
    """A local Ray with `slots` logical CPUs, started as s9tune starts one (init_ray then finds
    it running)."""
    import ray

    ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=True)


def _trainable() -> Any:
    """The stand-in, pickled by value: a Ray worker need not find benchmarks/ on its path."""
    import ray.cloudpickle
    import scale_trainable

    ray.cloudpickle.register_pickle_by_value(scale_trainable)
    return scale_trainable.train_trial


def drive_s9tune(spec: dict[str, Any]) -> dict[str, Any]:
    from s9tune.options import SearchOptions
    from s9tune.search.execution.runner import run_search

    space = scale_space(Path(spec["space"]), spec["configs"])
    trainable = _trainable()
    _start_ray(spec["slots"])
    opts = SearchOptions(
        space=spec["space"], data_dir=spec["data"], storage=spec["storage"], name=spec["name"], resume=spec["resume"]
    )
    out = run_search(space, opts, trainable=trainable)
    return {"finished": out.finished, "total": out.total, "errors": out.errors, "interrupted": out.interrupted}


def _tune_space(space: Any) -> dict[str, Any]:
    from ray import tune

    kinds = {"uniform": tune.uniform, "loguniform": tune.loguniform}
    out = {}
    for d in space.dists:
        if d.type == "choice":
            out[d.key] = tune.choice(list(d.values))
        elif d.type in kinds:
            out[d.key] = kinds[d.type](d.low, d.high)
        else:
            raise SystemExit(f"the baseline maps uniform, loguniform and choice only, not {d.type}")
    return out


def drive_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain Tune, as a user without s9tune would run the same search: Tune's random search,
    Ray's ASHA with the space's settings, Tune's default loggers, the same trainable."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from s9tune.data import load_splits
    from s9tune.search.space.space import METRIC, MODE

    space = scale_space(Path(spec["space"]), spec["configs"])
    fixed, sched = space.fixed, space.scheduler
    splits = load_splits(spec["data"], val_size=fixed.val_size, seed=fixed.seed, train_subset=fixed.train_subset)
    trainable = _trainable()
    _start_ray(spec["slots"])
    analysis = tune.run(
        tune.with_resources(
            tune.with_parameters(trainable, splits=splits.without_test(), base=fixed.to_dict()), {"cpu": 1}
        ),
        name=spec["name"],
        storage_path=spec["storage"],
        config=_tune_space(space),
        num_samples=space.num_samples,
        scheduler=ASHAScheduler(
            time_attr="training_iteration",
            max_t=space.max_t,
            grace_period=sched.grace_period,
            reduction_factor=sched.reduction_factor,
            brackets=sched.brackets,
        ),
        metric=METRIC,
        mode=MODE,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        max_failures=2,
        reuse_actors=True,
        verbose=0,
        raise_on_failed_trial=False,
    )
    done = sum(t.status == "TERMINATED" for t in analysis.trials)
    return {"finished": done, "total": len(analysis.trials), "errors": len(analysis.trials) - done}


def driver_main(spec_path: Path) -> int:
    """One driver: its search, then its own CPU seconds and peak RSS into the spec's `out`."""
    spec = json.loads(spec_path.read_text())
    os.environ["S9SCALE_EPOCH_S"] = str(spec["epoch_s"])
    out = (drive_baseline if spec["kind"] == "baseline" else drive_s9tune)(spec)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.update(cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_mib=ru.ru_maxrss / 1024)
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


# -- one size ------------------------------------------------------------------------------
def _spec(work: Path, kind: str, name: str, args: argparse.Namespace, configs: int, **kw: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "configs": configs,
        "slots": args.slots,
        "epoch_s": args.epoch_s,
        "space": str(args.space),
        "data": str(work / "data"),
        "storage": str(work / "st"),
        "resume": False,
        "out": str(work / f"{name}.out.json"),
        **kw,
    }


def per_trial(w: Watch, out: dict[str, Any]) -> float:
    """Driver CPU seconds per finished trial, from its first trial's start to its exit (Ray's
    start and the imports before it are left out; the export at the end is in)."""
    return (out["cpu_s"] - w.cpu_at_first_trial) / max(out["finished"], 1)


def reported_epochs(exp: Path) -> int:
    """Epochs the stand-in slept through: one per row of a trial's result.json."""
    return sum(count_lines(f) for f in exp.glob("train_trial_*/result.json"))


def measure(configs: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    space = scale_space(args.space, configs)
    base = _spec(work, "baseline", "baseline", args, configs)
    wb = launch(base, work, watch=work / "st" / "baseline", log=work / "baseline")
    bout = json.loads(Path(base["out"]).read_text())
    clean = _spec(work, "s9tune", "clean", args, configs)
    wc = launch(clean, work, watch=work / "st" / "clean", log=work / "clean")
    cout = json.loads(Path(clean["out"]).read_text())
    exp = work / "st" / "clean"
    row: dict[str, Any] = {
        "configs": configs,
        "slots": args.slots,
        "epoch_s": args.epoch_s,
        "wall_s": wc.wall_s,
        "ideal_s": reported_epochs(exp) * args.epoch_s / args.slots,
        "finished": cout["finished"],
        "epochs_per_trial": reported_epochs(exp) / max(cout["finished"], 1),
        "driver_cpu_s_per_trial": per_trial(wc, cout),
        "baseline_cpu_s_per_trial": per_trial(wb, bout),
        "baseline_wall_s": wb.wall_s,
        "baseline_finished": bout["finished"],
        "peak_rss_mib": cout["peak_rss_mib"],
        "baseline_peak_rss_mib": bout["peak_rss_mib"],
        "peak_fds": wc.peak_fds,
        "baseline_peak_fds": wb.peak_fds,
        "journal_bytes": (exp / "optuna.journal").stat().st_size,
        "journal_lines": count_lines(exp / "optuna.journal"),
        "journal_replay_s": journal_replay_seconds(exp),
        "console_lines": count_lines(work / "clean.console.txt"),
        "results_s": results_seconds(exp),
        "event_file_bytes": event_bytes(exp),
        # None: not within --tb-timeout; "not installed" where tensorboard is missing
        "tensorboard_list_s": tensorboard_seconds(exp, timeout=args.tb_timeout)
        if tensorboard_available()
        else "not installed",
        "clean_checks": check_runs(exp, space),
        "checkpoints_per_trial": checkpoints_per_trial(exp),
        "uri_journal_copies": uri_journal_copies(exp, wc.wall_s),
    }
    row["cpu_ratio"] = row["driver_cpu_s_per_trial"] / row["baseline_cpu_s_per_trial"]
    row.update(kill_and_resume(configs, args, work, space))
    return row


def measure_setting(configs: int, args: argparse.Namespace, work: Path, setting: str) -> dict[str, Any]:
    """The s9tune search alone, to the end, with Tune settings (KEY=VALUE;KEY=VALUE in its
    driver's environment): what they do to the driver's cost and to the epochs trained."""
    env = dict(pair.split("=", 1) for pair in setting.split(";") if pair)
    name = f"set-{len(list(work.glob('set-*.spec.json')))}"
    spec = _spec(work, "s9tune", name, args, configs, env=env)
    w = launch(spec, work, watch=work / "st" / name, log=work / name)
    out = json.loads(Path(spec["out"]).read_text())
    exp = work / "st" / name
    return {
        "configs": configs,
        "setting": setting or "(as shipped)",
        "wall_s": w.wall_s,
        "finished": out["finished"],
        "driver_cpu_s_per_trial": per_trial(w, out),
        "epochs_per_trial": reported_epochs(exp) / max(out["finished"], 1),
        "checkpoints_per_trial": checkpoints_per_trial(exp),
        "peak_rss_mib": out["peak_rss_mib"],
        "peak_fds": w.peak_fds,
        "first_trial_s": w.first_new_trial_s,
    }


def kill_and_resume(configs: int, args: argparse.Namespace, work: Path, space: Any) -> dict[str, Any]:
    """SIGKILL the driver (and its Ray) once half the configs have started, then resume."""
    spec = _spec(work, "s9tune", "killed", args, configs)
    watch = work / "st" / "killed"
    first = launch(spec, work, watch=watch, log=work / "killed", kill_at=configs // 2)
    before = {p.name for p in watch.glob("train_trial_*")}
    resumed = launch({**spec, "resume": True}, work, watch=watch, log=work / "resumed", known=before)
    out = json.loads(Path(spec["out"]).read_text())
    checks = check_runs(watch, space)
    return {
        "killed_after_s": first.wall_s,
        "trials_at_kill": len(before),
        "resume_to_first_trial_s": resumed.first_new_trial_s,
        "resumed_wall_s": resumed.wall_s,
        "resumed_finished": out["finished"],
        "resumed_peak_rss_mib": out["peak_rss_mib"],
        "resumed_console_lines": count_lines(work / "resumed.console.txt"),
        "killed_console_lines": count_lines(work / "killed.console.txt"),
        **{k: checks[k] for k in ("lost", "repeated", "wrongly_promoted")},
        "resume_checks": checks,
    }


def describe(row: dict[str, Any]) -> str:
    return (
        f"{row['configs']:5d} configs on {row['slots']} slots: wall {row['wall_s']:.0f} s "
        f"(ideal {row['ideal_s']:.1f}), "
        f"driver CPU {1e3 * row['driver_cpu_s_per_trial']:.0f} ms/trial vs plain Tune "
        f"{1e3 * row['baseline_cpu_s_per_trial']:.0f} ({row['cpu_ratio']:.2f}x); RSS {row['peak_rss_mib']:.0f} MiB, "
        f"{row['peak_fds']} fds; journal {row['journal_lines']} lines; console {row['console_lines']} lines; "
        f"results {row['results_s']:.1f} s; TensorBoard {row['tensorboard_list_s']} s; resume -> first new trial "
        f"{row['resume_to_first_trial_s']} s, lost {row['lost']}, repeated {row['repeated']}, "
        f"wrongly promoted {row['wrongly_promoted']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="100,300,1000", help="comma-separated search sizes")
    p.add_argument("--slots", type=int, default=32, help="logical CPUs of the local Ray: trials at once")
    p.add_argument("--epoch-s", type=float, default=0.005, help="the stand-in's sleep per epoch")
    p.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    p.add_argument("--tb-timeout", type=float, default=120.0, help="give up on TensorBoard's listing after this")
    p.add_argument("--keep", type=Path, default=None, help="keep the experiments in this folder")
    p.add_argument(
        "--setting",
        action="append",
        default=None,
        help="instead of the three searches: the s9tune search alone with KEY=VALUE[;KEY=VALUE] in its "
        "driver's environment (repeatable; an empty one runs it as shipped)",
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--driver", type=Path, default=None, help=argparse.SUPPRESS)  # one driver process
    args = p.parse_args(argv)
    if args.driver is not None:
        return driver_main(args.driver)
    rows, load0, t0 = [], list(os.getloadavg()), time.time()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    for configs in (int(x) for x in args.configs.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"s9scale-{configs}-", dir=args.keep))
        tiny_data(work / "data")
        try:
            if args.setting is None:
                t1 = time.time()
                rows.append(measure(configs, args, work))
                rows[-1]["size_s"] = time.time() - t1  # the three searches, results and TensorBoard
                print(describe(rows[-1]), flush=True)
            for setting in args.setting or []:
                rows.append(measure_setting(configs, args, work, setting))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
    out = {
        "command": " ".join(["python", "benchmarks/scale.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "load_avg_start": load0, "load_avg_end": list(os.getloadavg())},
        "total_s": time.time() - t0,
        "runs": rows,
        "projection_10k": project(rows) if args.setting is None else None,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
