"""Search-space YAML files: parse and validate before Ray starts.

A file looks like this (every section but `space` optional)::

    num_samples: 16
    fixed:                  # TrainConfig values shared by every trial
      width: 64
      epochs: 24
    space:                  # searched TrainConfig keys
      max_lr: {type: loguniform, low: 0.05, high: 2.0}
      pct_start: {type: uniform, low: 0.1, high: 0.5}
      aug_strength: {type: uniform, low: 0.0, high: 2.0}
    baseline: {max_lr: 0.4, pct_start: 0.2083, aug_strength: 1.0}   # trial 0
    scheduler: {type: asha, grace_period: 4, reduction_factor: 2}
    searcher: {type: optuna, seed: 0}
    reevaluate: {top: 3, seeds: 2}   # the top 3 configs trained on 2 more seeds; pick by mean
                                     # (or `auto`: reruns while they can change the pick)
    resources: {cpus_per_trial: 2, gpus_per_trial: 0.25}

Errors name the file and the key and raise ConfigError (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig, field_types, read_yaml_mapping
from s9tune.errors import ConfigError, shown
from s9tune.search.space.checks import check_field, err, mapping, number
from s9tune.search.space.dists import Dist, parse_dist
from s9tune.search.space.sections import ReevalSpec, SchedulerSpec, parse_reeval, parse_scheduler

TOP_KEYS = {
    "num_samples",
    "fixed",
    "space",
    "baseline",
    "scheduler",
    "searcher",
    "reevaluate",
    "resources",
    "description",
}
OPTUNA_STARTUP = 10  # TPESampler's own n_startup_trials
SEARCHER_KEYS = {"type", "seed", "n_startup_trials"}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial"}
METRIC, MODE = "val_accuracy", "max"
BUDGET_KEY = "budget"  # in a halving run's trial config: the epochs of its complete schedule
CONFIG_KEY = "config_id"  # in a halving run's trial config: the config it runs (shared by its runs)
SEED_KEY = "rerun_seed"  # in a re-evaluation run's trial config: the TrainConfig seed it trains with
REPLACES_KEY = "replaces"  # in a promoted run's trial config, if it took the place of that config's failed run
# what a run's config adds to the searched values: a halving run its budget, config and stand-in;
# a re-evaluation run its config and seed (search/searcher/reeval.py)
RUN_KEYS = (BUDGET_KEY, CONFIG_KEY, REPLACES_KEY, SEED_KEY)
MAX_NUM_SAMPLES = 10_000  # configs in one search; each is at least one trial folder
DATA_KEYS = ("val_size", "train_subset")  # the driver loads the splits once for all trials


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    num_samples: int
    fixed: TrainConfig
    dists: tuple[Dist, ...]
    baseline: dict[str, Any] | None
    scheduler: SchedulerSpec
    searcher_seed: int
    cpus_per_trial: float
    gpus_per_trial: float
    raw: dict[str, Any] = field(default_factory=dict)
    startup_trials: int | None = None  # TPE's random start-up configs; None: default_startup
    reevaluate: ReevalSpec = field(default_factory=ReevalSpec)  # top configs retrained on more seeds

    @property
    def max_t(self) -> int:
        return self.fixed.epochs

    @property
    def max_trials(self) -> int:
        """At most how many Tune trials the search makes: each config once per budget, and the
        re-evaluation runs."""
        budgets = self.scheduler.budgets or (self.max_t,)
        # `auto`'s cap is a share of the search's epochs: at most every config at every budget
        most = self.reevaluate.runs(self.num_samples, search_epochs=self.num_samples * sum(budgets), max_t=self.max_t)
        return self.num_samples * len(budgets) + most

    @property
    def n_startup_trials(self) -> int:
        return self.startup_trials if self.startup_trials is not None else default_startup(self.num_samples)

    def to_record(self) -> dict[str, Any]:
        """The space as the experiment stores it (search/experiment/record.py), for resume and results."""
        return {
            "space_file": str(self.path),
            "num_samples": self.num_samples,
            "fixed": self.fixed.to_dict(),
            "dists": [d.to_record() for d in self.dists],
            "baseline": self.baseline,
            "scheduler": self.scheduler.to_record(self.max_t),
            "searcher": {
                "type": "optuna",
                "sampler": "TPE",
                "seed": self.searcher_seed,
                "n_startup_trials": self.n_startup_trials,
            },
            "reevaluate": self.reevaluate.to_record(),
            "resources": {"cpus_per_trial": self.cpus_per_trial, "gpus_per_trial": self.gpus_per_trial},
            "metric": METRIC,
            "mode": MODE,
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> SearchSpace:
        return cls(
            path=Path(d["space_file"]),
            num_samples=int(d["num_samples"]),
            fixed=TrainConfig.from_dict(d["fixed"]),
            dists=tuple(Dist.from_record(x) for x in d["dists"]),
            baseline=d.get("baseline"),
            scheduler=SchedulerSpec.from_record(d["scheduler"]),
            searcher_seed=int(d["searcher"]["seed"]),
            cpus_per_trial=float(d["resources"]["cpus_per_trial"]),
            gpus_per_trial=float(d["resources"]["gpus_per_trial"]),
            # an experiment recorded before the setting existed ran with Optuna's default
            startup_trials=int(d["searcher"].get("n_startup_trials", OPTUNA_STARTUP)),
            reevaluate=ReevalSpec.from_record(d.get("reevaluate")),
        )

    def with_num_samples(self, n: int | None) -> SearchSpace:
        """--num-samples, if given, in place of the file's."""
        from dataclasses import replace

        if n is not None and not 1 <= n <= MAX_NUM_SAMPLES:
            raise ConfigError(f"--num-samples {n}: must lie in [1, {MAX_NUM_SAMPLES:,}]")
        return self if n is None else replace(self, num_samples=n)

    def with_resources(self, cpus: float | None, gpus: float | None) -> SearchSpace:
        from dataclasses import replace

        return replace(
            self,
            cpus_per_trial=self.cpus_per_trial if cpus is None else cpus,
            gpus_per_trial=self.gpus_per_trial if gpus is None else gpus,
        )


def load_space(path: Path) -> SearchSpace:
    path = Path(path).expanduser().resolve()
    raw = read_yaml_mapping(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise err(path, sorted(unknown)[0], f"unknown key (allowed: {', '.join(sorted(TOP_KEYS))})")
    types = field_types()

    fixed_raw = mapping(path, "fixed", raw.get("fixed"), set(types))
    try:
        fixed = TrainConfig().with_overrides(fixed_raw)
    except ConfigError as exc:
        raise err(path, "fixed", str(exc)) from None

    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise err(path, "space", "expected a non-empty mapping of TrainConfig key -> distribution")
    dists = []
    for key, spec in space_raw.items():
        if key not in types:
            raise err(path, f"space.{key}", "not a TrainConfig key")
        if key == "epochs":
            raise err(
                path,
                "space.epochs",
                "cannot be searched: it is the length of the LR schedule "
                "(the halving scheduler runs shorter complete ones)",
            )
        if key in DATA_KEYS:
            raise err(
                path, f"space.{key}", "defines the validation split, which every trial must share; put it under fixed"
            )
        if key in fixed_raw:
            raise err(path, f"space.{key}", "is also under fixed; keep it in one place")
        dists.append(parse_dist(path, key, spec, types[key]))

    num_samples = int(number(path, "num_samples", raw.get("num_samples", 16), integer=True))
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise err(path, "num_samples", f"must lie in [1, {MAX_NUM_SAMPLES:,}]")

    scheduler = parse_scheduler(path, raw.get("scheduler"), fixed)

    searcher = mapping(path, "searcher", raw.get("searcher"), SEARCHER_KEYS)
    if searcher.get("type", "optuna") != "optuna":
        raise err(path, "searcher.type", f"only 'optuna' is supported, got {shown(searcher.get('type'))}")
    seed = int(number(path, "searcher.seed", searcher.get("seed", 0), integer=True))
    startup = searcher.get("n_startup_trials")
    if startup is not None:
        startup = int(number(path, "searcher.n_startup_trials", startup, integer=True))
        if not 1 <= startup <= MAX_NUM_SAMPLES:
            raise err(path, "searcher.n_startup_trials", f"must lie in [1, {MAX_NUM_SAMPLES:,}]")

    reevaluate = parse_reeval(path, raw.get("reevaluate"))

    res = mapping(path, "resources", raw.get("resources"), RESOURCE_KEYS)
    cpus = number(path, "resources.cpus_per_trial", res.get("cpus_per_trial", 1))
    gpus = number(path, "resources.gpus_per_trial", res.get("gpus_per_trial", 0))
    check_resources(cpus, gpus, where=f"{path}: resources")

    baseline = _parse_baseline(path, raw.get("baseline", "default"), dists, fixed)
    return SearchSpace(
        path,
        num_samples,
        fixed,
        tuple(dists),
        baseline,
        scheduler,
        seed,
        cpus,
        gpus,
        raw,
        startup_trials=startup,
        reevaluate=reevaluate,
    )


def default_startup(num_samples: int) -> int:
    """TPE's random start-up configs when the space names none: a quarter of the search, at
    most Optuna's 10. With Optuna's 10 a search of 12 configs is nearly all random; in the
    design replay (benchmarks/RESULTS.md, "search designs by replay") a quarter was better at
    10 configs and not resolved at 23-24 (better under one surrogate); above 40 configs both
    rules give 10."""
    return min(OPTUNA_STARTUP, max(1, round(num_samples / 4)))


def check_resources(cpus: float, gpus: float, where: str = "resources", unit: str = "trial") -> None:
    if cpus <= 0:
        raise ConfigError(f"{where}: cpus_per_{unit} must be > 0, got {cpus}")
    if gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise ConfigError(f"{where}: gpus_per_{unit} must be a fraction in [0, 1] or a whole number, got {gpus}")


def _parse_baseline(path: Path, raw: Any, dists: list[Dist], fixed: TrainConfig) -> dict[str, Any] | None:
    """Trial 0 is the known-good recipe: by default TrainConfig's defaults (Page's baseline)."""
    if raw is None or raw is False:
        return None
    if raw == "default":
        defaults = TrainConfig()
        point = {d.key: getattr(defaults, d.key) for d in dists}
        # a baseline outside the searched range would be rejected by Optuna; clip into it
        return {d.key: _clip(d, v) for d, v in zip(dists, point.values(), strict=True)}
    base = mapping(path, "baseline", raw, {d.key for d in dists})
    missing = {d.key for d in dists} - set(base)
    if missing:
        raise err(path, "baseline", f"needs a value for every searched key; missing {sorted(missing)}")
    for d in dists:
        if not d.contains(base[d.key]):
            raise err(path, f"baseline.{d.key}", f"{shown(base[d.key])} lies outside the searched range")
        check_field(path, f"baseline.{d.key}", d.key, base[d.key])
    return dict(base)


def _clip(d: Dist, v: Any) -> Any:
    if d.contains(v):
        return v
    if d.type == "choice":
        return d.values[0]
    return min(max(v, d.low), d.high)
