"""Do early ASHA rungs predict the final ranking under a OneCycle schedule?

A OneCycle schedule sized for E epochs is still at (or climbing to) its peak learning rate at
ASHA's early rungs, where validation accuracy swings by several points from epoch to epoch. This
study trains K sampled configs (max_lr, pct_start, aug_strength) on the real CIFAR-10 mini slice:

* once on the long schedule (E epochs, val accuracy recorded after every epoch), and
* once per short *complete* OneCycle schedule (e.g. 2 and 4 epochs),

then measures how well each epoch's ranking (ASHA's rung) and each short schedule's final ranking
predict the long schedule's final ranking (Spearman), and simulates search designs on the
recorded curves, reporting for each the regret (best final val accuracy minus the final val
accuracy of the config the design picks) and the compute it spends (epochs trained over all K):

* A: ASHA on the long schedule (grace g, reduction factor r, rungs g, g*r, g*r^2, ... < E),
  simulated as synchronous successive halving: at each rung the top ceil(n/r) continue (which
  is what Ray's percentile cutoff keeps when all n trials have reported);
* B: short complete schedules: all K on an s-epoch schedule, the top ceil(K/r) on the long one
  (and cascades over several short lengths).

Seed noise: the baseline config is re-run on the long schedule with extra seeds.

    .venv/bin/python benchmarks/rung_spearman.py --json benchmarks/rung_spearman.json

Runs are cached in the JSON file as they finish; `--resume` reuses them (re-analysis is free).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import MINI_DIR, shipped_space
from scipy.stats import spearmanr


# -- configs and runs ---------------------------------------------------------------------------
def draw(d: Any, rng: np.random.Generator) -> Any:
    """One value of a search-space distribution (search/space.Dist)."""
    if d.type == "choice":
        return d.values[int(rng.integers(len(d.values)))]
    if d.type in ("loguniform", "lograndint"):
        v = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
    else:
        v = rng.uniform(d.low, d.high)
    if d.type == "quniform":
        return float(round(v / d.q) * d.q)
    return round(v) if d.type in ("randint", "lograndint") else float(v)


def sample_configs(k: int, seed: int, space_name: str) -> list[dict[str, Any]]:
    """The space's baseline first, then k-1 draws from its distributions (seeded numpy RNG)."""
    space = shipped_space(space_name)
    rng = np.random.default_rng(seed)
    first = [dict(space.baseline)] if space.baseline else []
    return first + [{d.key: draw(d, rng) for d in space.dists} for _ in range(k - len(first))]


def run_key(idx: int, epochs: int, seed: int) -> str:
    return f"c{idx}_e{epochs}_s{seed}"


def train_curve(hp: dict[str, float], epochs: int, seed: int, args: argparse.Namespace, splits) -> dict[str, Any]:
    from s9tune.config import TrainConfig
    from s9tune.engine import train

    cfg = TrainConfig(
        width=args.width,
        batch_size=args.batch_size,
        device="cpu",
        val_size=args.val_size,
        seed=seed,
        epochs=epochs,
        **hp,
    )
    t0 = time.perf_counter()
    run = train(cfg, splits, callbacks=[])
    res = run.result
    h = res.history
    return {
        "hp": hp,
        "epochs": epochs,
        "seed": seed,
        "status": res.status,
        "val_accuracy": [m.eval_accuracy for m in h],
        "val_loss": [m.eval_loss for m in h],
        "train_loss": [m.train_loss for m in h],
        "train_accuracy": [m.train_accuracy for m in h],
        "lr_last_step": [m.lr for m in h],
        "epoch_s": [m.epoch_s for m in h],
        "wall_s": time.perf_counter() - t0,
    }


_W: dict[str, Any] = {}


def _worker_init(args: argparse.Namespace) -> None:
    import torch

    from s9tune.data import load_splits

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _W["args"] = args
    _W["splits"] = load_splits(args.data_dir, val_size=args.val_size, seed=0, train_subset=None, download=False)


def _worker_run(hp: dict[str, float], epochs: int, seed: int) -> dict[str, Any]:
    import torch

    r = train_curve(hp, epochs, seed, _W["args"], _W["splits"])
    r["torch_threads"] = torch.get_num_threads()
    return r


def padded_acc(run: dict[str, Any], epochs: int) -> np.ndarray:
    """Val accuracy per epoch; a diverged run scores 0 for the epochs it did not reach."""
    acc = list(run["val_accuracy"])
    return np.array(acc + [0.0] * (epochs - len(acc)), dtype=float)


# -- statistics ---------------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def boot_ci(a: np.ndarray, b: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile bootstrap interval of Spearman(a, b), resampling configs."""
    k = len(a)
    vals = []
    for _ in range(n):
        i = rng.integers(0, k, k)
        v = spearman(a[i], b[i])
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    return (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))


def top_k(scores: np.ndarray, idx: list[int], keep: int) -> list[int]:
    """The `keep` best of `idx` by score (stable: ties go to the earlier index)."""
    order = sorted(idx, key=lambda i: (-scores[i], i))
    return order[:keep]


# -- design simulations -------------------------------------------------------------------------
# Every design returns (picked config index, epochs spent). `final` is the long-schedule final
# val accuracy: a design is scored on the long-schedule final accuracy of the config it picks.


def asha_rungs(grace: int, rf: int, epochs: int) -> list[int]:
    rungs, t = [], grace
    while t < epochs:
        rungs.append(t)
        t *= rf
    return rungs


def sim_asha(long_acc: np.ndarray, idx: list[int], grace: int, rf: int) -> tuple[int, int, list[int]]:
    """Synchronous successive halving on the long schedule's curves: rungs grace*rf^k < E."""
    epochs = long_acc.shape[1]
    alive, spent, prev = list(idx), 0, 0
    for rung in asha_rungs(grace, rf, epochs):
        spent += len(alive) * (rung - prev)
        prev = rung
        alive = top_k(long_acc[:, rung - 1], alive, max(1, math.ceil(len(alive) / rf)))
    spent += len(alive) * (epochs - prev)
    pick = top_k(long_acc[:, -1], alive, 1)[0]
    return pick, spent, alive


def sim_short(
    short_final: dict[int, np.ndarray], long_final: np.ndarray, idx: list[int], stages: list[int], rf: int, epochs: int
) -> tuple[int, int]:
    """Fresh complete schedules of increasing length: all on stages[0], top 1/rf on the next, ...,
    the survivors on the long schedule (E epochs); pick the best long final among them."""
    alive, spent = list(idx), 0
    for s in stages:
        spent += len(alive) * s
        alive = top_k(short_final[s], alive, max(1, math.ceil(len(alive) / rf)))
    spent += len(alive) * epochs
    return top_k(long_final, alive, 1)[0], spent


def sim_short_pick(short_final: dict[int, np.ndarray], idx: list[int], s: int, epochs: int) -> tuple[int, int]:
    """All on the s-epoch schedule, then only the winner is trained on the long one."""
    return top_k(short_final[s], idx, 1)[0], len(idx) * s + epochs


def designs(args: argparse.Namespace, shorts: list[int]) -> list[tuple[str, str, Callable]]:
    """(family, name, fn(idx, long_acc, short_final) -> (pick, spent))."""
    E = args.epochs
    out: list[tuple[str, str, Callable]] = []
    out.append(
        ("full", f"all K on the {E}-epoch schedule", lambda idx, la, sf: (top_k(la[:, -1], idx, 1)[0], len(idx) * E))
    )
    for rf in (2, 3, 4):
        for g in range(1, max(1, E // 2) + 1):
            rungs = tuple(asha_rungs(g, rf, E))
            if not rungs:
                continue
            name = f"ASHA g={g} r={rf} rungs {','.join(map(str, rungs))}"
            out.append(("A", name, lambda idx, la, sf, g=g, rf=rf: sim_asha(la, idx, g, rf)[:2]))
    for s in shorts:
        out.append(("B", f"short {s}ep -> winner on {E}ep", lambda idx, la, sf, s=s: sim_short_pick(sf, idx, s, E)))
        for rf in (2, 3, 4):
            out.append(
                (
                    "B",
                    f"short {s}ep all, top 1/{rf} on {E}ep",
                    lambda idx, la, sf, s=s, rf=rf: sim_short(sf, la[:, -1], idx, [s], rf, E),
                )
            )
    if len(shorts) >= 2:
        for rf in (2, 3):
            st = sorted(shorts)
            out.append(
                (
                    "B",
                    f"cascade {'->'.join(map(str, st))}->{E}ep r={rf}",
                    lambda idx, la, sf, st=st, rf=rf: sim_short(sf, la[:, -1], idx, st, rf, E),
                )
            )
    return out


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(MINI_DIR.resolve()))
    p.add_argument("--space", default="default", help="shipped search space (search_spaces/NAME.yaml) to sample from")
    p.add_argument("--configs", type=int, default=12, help="K sampled configs (the baseline is one of them)")
    p.add_argument("--epochs", type=int, default=8, help="E, the long schedule")
    p.add_argument("--short", default="2,4", help="comma-separated short complete-schedule lengths")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-size", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="seed of the config sampler and of every training run")
    p.add_argument("--noise-seeds", default="1,2", help="extra seeds for the baseline on the long schedule ('' = none)")
    p.add_argument(
        "--subset-size",
        type=int,
        default=0,
        help="size of the random config subsets for the robustness table (0 = 3K/4)",
    )
    p.add_argument("--subsets", type=int, default=2000)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=1, help="training processes run side by side")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch's default)")
    p.add_argument("--json", default=None, help="write configs, raw curves and results here")
    p.add_argument("--resume", action="store_true", help="reuse the runs already stored in --json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    shorts = sorted({int(s) for s in args.short.split(",") if s.strip()})
    if any(s >= args.epochs or s < 1 for s in shorts):
        raise SystemExit("--short lengths must lie in [1, --epochs)")
    noise_seeds = [int(s) for s in args.noise_seeds.split(",") if s.strip()]
    K, E = args.configs, args.epochs
    hps = sample_configs(K, args.seed, args.space)

    out_path = Path(args.json) if args.json else None
    runs: dict[str, Any] = {}
    if args.resume and out_path is not None and out_path.exists():
        old = json.loads(out_path.read_text())
        runs = dict(old.get("runs", {}).items())
        if len(old.get("configs") or []) == K:
            hps = old["configs"]  # re-analysis keeps the configs the stored runs were trained with

    todo: list[tuple[int, int, int]] = [(i, E, args.seed) for i in range(K)]
    todo += [(0, E, s) for s in noise_seeds]
    todo += [(i, s, args.seed) for s in shorts for i in range(K)]
    todo = [t for t in todo if run_key(*t) not in runs or runs[run_key(*t)]["hp"] != hps[t[0]]]

    import torch

    meta = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv,
        "args": vars(args),
        "torch": torch.__version__,
        "torch_threads_main": torch.get_num_threads(),
        "load_avg_at_start": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }

    def save(results: dict[str, Any] | None = None) -> None:
        if out_path is None:
            return
        payload = {"meta": meta, "configs": hps, "runs": runs, "results": results}
        tmp = out_path.with_suffix(out_path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(out_path)

    t_start = time.perf_counter()
    if todo:
        print(
            f"{len(todo)} runs, {sum(t[1] for t in todo)} epochs to train, {args.jobs} process(es) x "
            f"{args.threads or 'default'} torch thread(s)",
            file=sys.stderr,
            flush=True,
        )
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_worker_init, initargs=(args,)) as pool:
            futs = {pool.submit(_worker_run, hps[i], ep, sd): (i, ep, sd) for (i, ep, sd) in todo}
            for n, fut in enumerate(as_completed(futs), 1):
                i, ep, sd = futs[fut]
                r = fut.result()
                runs[run_key(i, ep, sd)] = r
                save()
                el = time.perf_counter() - t_start
                print(
                    f"[{n}/{len(todo)} {el:6.0f}s] config {i:2d} {ep}ep seed {sd}: {r['status']}, "
                    f"val acc {' '.join(f'{a:.3f}' for a in r['val_accuracy'])} ({r['wall_s']:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    train_wall = time.perf_counter() - t_start
    meta["train_wall_s_this_invocation"] = train_wall
    meta["train_wall_s_all_runs"] = sum(r["wall_s"] for r in runs.values())
    meta["load_avg_at_end"] = os.getloadavg()
    meta["epochs_trained_all_runs"] = sum(len(r["epoch_s"]) for r in runs.values())
    meta["median_epoch_s"] = float(np.median([x for r in runs.values() for x in r["epoch_s"]]))

    results = analyse(args, hps, runs, shorts, noise_seeds)
    save(results)
    return 0


@dataclass
class Study:
    """The trained runs of one study, read into the arrays every part of the analysis uses."""

    args: argparse.Namespace
    hps: list[dict[str, Any]]
    runs: dict[str, Any]
    shorts: list[int]
    noise_seeds: list[int]
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(12345))

    def __post_init__(self) -> None:
        self.K, self.E, self.seed = self.args.configs, self.args.epochs, self.args.seed
        self.long_acc = np.stack([padded_acc(self.runs[run_key(i, self.E, self.seed)], self.E) for i in range(self.K)])
        self.final = self.long_acc[:, -1]
        self.short_final = {
            s: np.array([padded_acc(self.runs[run_key(i, s, self.seed)], s)[-1] for i in range(self.K)])
            for s in self.shorts
        }
        self.best = int(np.argmax(self.final))


def print_configs(t: Study, res: dict[str, Any]) -> None:
    args, hps, runs, K, E = t.args, t.hps, t.runs, t.K, t.E
    seed, long_acc, final, short_final, best, shorts = t.seed, t.long_acc, t.final, t.short_final, t.best, t.shorts
    print(
        f"\nK={K} configs, long schedule E={E} epochs, short schedules {shorts}, width {args.width}, "
        f"batch {args.batch_size}, seed {seed}"
    )
    hdr = f"{'#':>2} {'max_lr':>7} {'pct':>5} {'aug':>5} | " + " ".join(f"e{e:<4d}" for e in range(1, E + 1))
    hdr += " | " + " ".join(f"s{s}fin" for s in shorts) + " | rank"
    print(hdr)
    ranks_final = (-final).argsort().argsort() + 1
    for i, hp in enumerate(hps):
        st = runs[run_key(i, E, seed)]["status"]
        row = f"{i:>2} {hp['max_lr']:7.3f} {hp['pct_start']:5.2f} {hp['aug_strength']:5.2f} | "
        row += " ".join(f"{a:.3f}" for a in long_acc[i]) + " | "
        row += " ".join(f"{short_final[s][i]:.3f}" for s in shorts) + f" | {ranks_final[i]:>3}"
        if st != "completed":
            row += f" ({st})"
        print(row)
    print(
        f"final val acc over configs: best {final.max():.4f} (config {best}), median {np.median(final):.4f}, "
        f"worst {final.min():.4f}, std {final.std(ddof=1):.4f}"
    )


def seed_noise(t: Study, res: dict[str, Any]) -> None:
    runs, E, seed, long_acc, final = t.runs, t.E, t.seed, t.long_acc, t.final
    noise: dict[str, Any] = {}
    noise_seeds = t.noise_seeds
    if noise_seeds:
        curves = np.stack([long_acc[0]] + [padded_acc(runs[run_key(0, E, s)], E) for s in noise_seeds])
        sd_e = curves.std(axis=0, ddof=1)
        noise = {
            "seeds": [seed, *noise_seeds],
            "curves": curves.tolist(),
            "std_per_epoch": sd_e.tolist(),
            "final_mean": float(curves[:, -1].mean()),
            "final_std": float(sd_e[-1]),
        }
        # share of the across-config variance of the final accuracy that seed noise explains
        var_cfg = float(final.var(ddof=1))
        noise["final_std_across_configs"] = float(math.sqrt(var_cfg))
        noise["reliability"] = float(max(0.0, 1 - sd_e[-1] ** 2 / var_cfg)) if var_cfg > 0 else float("nan")
        print(f"\nseed noise (baseline, seeds {noise['seeds']}):")
        print("  epoch      " + " ".join(f"{e:>6d}" for e in range(1, E + 1)))
        for s, c in zip(noise["seeds"], curves, strict=True):
            print(f"  seed {s:<5d} " + " ".join(f"{a:6.3f}" for a in c))
        print("  std        " + " ".join(f"{v:6.3f}" for v in sd_e))
        print(
            f"  final: {noise['final_mean']:.4f} +- {noise['final_std']:.4f} (seed std) vs "
            f"{noise['final_std_across_configs']:.4f} std across configs; "
            f"reliability 1 - var_seed/var_configs = {noise['reliability']:.2f}"
        )
    res["noise"] = noise


def per_epoch_spearman(t: Study, res: dict[str, Any]) -> None:
    args, hps, runs, K, E = t.args, t.hps, t.runs, t.K, t.E
    seed, rng, long_acc, final, best = t.seed, t.rng, t.long_acc, t.final, t.best
    print(f"\nper-epoch ranking (long schedule, epoch e) vs final (epoch {E}); 95% bootstrap CI over configs")
    print(
        f"  {'epoch':>5} {'spearman':>8} {'95% CI':>15} {'mean lr/max':>11} {'argmax':>6} {'regret':>7} "
        f"{'best@rank':>9}"
    )
    per_epoch = []
    for e in range(1, E + 1):
        a = long_acc[:, e - 1]
        rho = spearman(a, final)
        ci = boot_ci(a, final, args.bootstrap, rng) if e < E else (1.0, 1.0)
        pick = top_k(a, list(range(K)), 1)[0]
        rank_of_best = int((-a).argsort().argsort()[best] + 1)
        lr_frac = float(
            np.mean(
                [
                    runs[run_key(i, E, seed)]["lr_last_step"][e - 1] / hps[i]["max_lr"]
                    for i in range(K)
                    if len(runs[run_key(i, E, seed)]["lr_last_step"]) >= e
                ]
            )
        )
        per_epoch.append(
            {
                "epoch": e,
                "spearman": rho,
                "ci95": ci,
                "argmax": pick,
                "regret": float(final[best] - final[pick]),
                "rank_of_best": rank_of_best,
                "mean_lr_over_max": lr_frac,
            }
        )
        print(
            f"  {e:>5} {rho:8.3f} [{ci[0]:6.3f},{ci[1]:6.3f}] {lr_frac:11.2f} {pick:>6} "
            f"{final[best] - final[pick]:7.4f} {rank_of_best:>9}"
        )
    res["per_epoch"] = per_epoch


def short_schedules(t: Study, res: dict[str, Any]) -> None:
    args, K, E, rng = t.args, t.K, t.E, t.rng
    long_acc, final, short_final, best, shorts = t.long_acc, t.final, t.short_final, t.best, t.shorts
    print(f"\nshort complete schedules: final val acc of the s-epoch schedule vs the {E}-epoch final")
    print(
        f"  {'s':>3} {'spearman':>8} {'95% CI':>15} {'argmax':>6} {'regret':>7} {'best@rank':>9} "
        f"{'vs long epoch s':>16}"
    )
    per_short = []
    for s in shorts:
        a = short_final[s]
        rho = spearman(a, final)
        ci = boot_ci(a, final, args.bootstrap, rng)
        pick = top_k(a, list(range(K)), 1)[0]
        rank_of_best = int((-a).argsort().argsort()[best] + 1)
        per_short.append(
            {
                "short_epochs": s,
                "spearman": rho,
                "ci95": ci,
                "argmax": pick,
                "regret": float(final[best] - final[pick]),
                "rank_of_best": rank_of_best,
                "long_epoch_same_cost_spearman": res["per_epoch"][s - 1]["spearman"],
                "mean_acc": float(a.mean()),
                "mean_long_acc_at_epoch_s": float(long_acc[:, s - 1].mean()),
            }
        )
        print(
            f"  {s:>3} {rho:8.3f} [{ci[0]:6.3f},{ci[1]:6.3f}] {pick:>6} {final[best] - final[pick]:7.4f} "
            f"{rank_of_best:>9} "
            f"{res['per_epoch'][s - 1]['spearman']:16.3f}"
        )
        print(
            f"      mean val acc: {a.mean():.4f} after a complete {s}-epoch schedule vs "
            f"{long_acc[:, s - 1].mean():.4f} "
            f"at epoch {s} of the {E}-epoch schedule"
        )
    res["per_short"] = per_short


def designs_on_all(t: Study, res: dict[str, Any]) -> None:
    args, K, E, long_acc = t.args, t.K, t.E, t.long_acc
    final, short_final, best, shorts = t.final, t.short_final, t.best, t.shorts
    ds = designs(args, shorts)
    all_idx = list(range(K))
    print(
        f"\ndesigns on all K={K} configs (regret = best final val acc - picked config's final val acc; "
        f"epochs = total trained; full search = {K * E})"
    )
    print(f"  {'design':<42} {'epochs':>6} {'x full':>6} {'pick':>4} {'regret':>7}")
    table = []
    for fam, name, fn in ds:
        pick, spent = fn(all_idx, long_acc, short_final)
        table.append(
            {
                "family": fam,
                "design": name,
                "epochs": int(spent),
                "fraction_of_full": spent / (K * E),
                "pick": int(pick),
                "regret": float(final[best] - final[pick]),
            }
        )
        print(f"  {name:<42} {spent:>6} {spent / (K * E):6.2f} {pick:>4} {final[best] - final[pick]:7.4f}")
    res["designs_all"] = table


def robustness(t: Study, res: dict[str, Any]) -> None:
    args, K, E, rng = t.args, t.K, t.E, t.rng
    long_acc, final, short_final, shorts = t.long_acc, t.final, t.short_final, t.shorts
    m = args.subset_size or max(2, (3 * K) // 4)
    if m < K:
        n_sub = min(args.subsets, math.comb(K, m))
        if n_sub == math.comb(K, m) and n_sub <= args.subsets:
            subsets = [list(c) for c in itertools.combinations(range(K), m)]
        else:
            subsets = [sorted(rng.choice(K, m, replace=False).tolist()) for _ in range(n_sub)]
        print(
            f"\nrobustness: the designs on {len(subsets)} random subsets of {m} of the K configs "
            f"(regret vs each subset's best; P(best) = the design picks the subset's best config)"
        )
        print(f"  {'design':<42} {'epochs':>6} {'x full':>6} {'mean regret':>11} {'p90 regret':>10} {'P(best)':>7}")
        rob = []
        ds = designs(args, shorts)
        rand_regret = float(np.mean([final[s].max() - final[s].mean() for s in subsets]))
        for fam, name, fn in ds:
            regs, costs, hits = [], [], []
            for sub in subsets:
                pick, spent = fn(sub, long_acc, short_final)
                b = max(final[i] for i in sub)
                regs.append(b - final[pick])
                costs.append(spent)
                hits.append(final[pick] == b)
            rob.append(
                {
                    "family": fam,
                    "design": name,
                    "epochs": float(np.mean(costs)),
                    "fraction_of_full": float(np.mean(costs)) / (m * E),
                    "mean_regret": float(np.mean(regs)),
                    "p90_regret": float(np.percentile(regs, 90)),
                    "p_best": float(np.mean(hits)),
                }
            )
            print(
                f"  {name:<42} {np.mean(costs):6.1f} {np.mean(costs) / (m * E):6.2f} {np.mean(regs):11.4f} "
                f"{np.percentile(regs, 90):10.4f} {np.mean(hits):7.2f}"
            )
        print(f"  {'(random pick, 0 epochs of search)':<42} {'':>6} {'':>6} {rand_regret:11.4f}")
        res["robustness"] = {
            "subset_size": m,
            "n_subsets": len(subsets),
            "random_pick_mean_regret": rand_regret,
            "designs": rob,
        }


def analyse(args, hps, runs, shorts, noise_seeds) -> dict[str, Any]:
    t = Study(args, hps, runs, shorts, noise_seeds)
    res: dict[str, Any] = {}
    for part in (print_configs, seed_noise, per_epoch_spearman, short_schedules, designs_on_all, robustness):
        part(t, res)
    final, best, short_final = t.final, t.best, t.short_final
    res["final_long"] = final.tolist()
    res["best"] = best
    res["short_final"] = {str(s): v.tolist() for s, v in short_final.items()}
    return res


if __name__ == "__main__":
    raise SystemExit(main())
