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

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig, check_seeds, field_types, read_yaml_mapping
from s9tune.errors import ConfigError, shown
from s9tune.search.space.checks import check_field, err, mapping, number
from s9tune.search.space.dists import DIST_KEYS, Dist, parse_dist
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
MAX_SEARCHER_SEED = 2**31 - 1
DATA_KEYS = ("val_size", "train_subset")  # the driver loads the splits once for all trials


@dataclass(frozen=True)
class SearchPlan:
    """What a search will run, known before it runs: the configs at each budget (under ASHA one
    budget, every config, each possibly stopped early), the re-evaluation runs (under `auto` its
    cap), and the Tune trials and epochs in all: exact under halving with a fixed step, an upper
    bound otherwise. A promoted run that replaces a failed one comes on top."""

    rung_sizes: tuple[int, ...]
    reruns: int
    trials: int
    epochs: int
    exact: bool


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
        """At most how many Tune trials the search makes, whatever fails: each config once per
        budget (a promoted stand-in takes a failed run's place), and the re-evaluation runs."""
        budgets = self.scheduler.budgets or (self.max_t,)
        return self.num_samples * len(budgets) + self._most_reruns()

    def _most_reruns(self) -> int:
        budgets = self.scheduler.budgets or (self.max_t,)
        # `auto`'s cap is a share of the search's epochs: at most every config at every budget
        return self.reevaluate.runs(self.num_samples, search_epochs=self.num_samples * sum(budgets), max_t=self.max_t)

    @property
    def rerun_seeds(self) -> range:
        """The seeds a rerun may train with: `fixed.seed + 1 ..` one per rerun a config can get
        (a fixed step's `seeds`; under `auto` one config may take every rerun of the cap)."""
        most = self._most_reruns() if self.reevaluate.auto else self.reevaluate.seeds
        return range(self.fixed.seed + 1, self.fixed.seed + most + 1)

    def plan(self) -> SearchPlan:
        if self.scheduler.type == "halving":
            sizes = tuple(self.scheduler.rung_sizes(self.num_samples))
            epochs = sum(n * b for n, b in zip(sizes, self.scheduler.budgets, strict=True))
            reruns = self.reevaluate.runs(sizes[-1], search_epochs=epochs, max_t=self.max_t)
            exact = not self.reevaluate.auto  # auto's reruns: at most its cap
        else:
            sizes = (self.num_samples,)
            epochs = self.num_samples * self.max_t
            reruns = self.reevaluate.runs(self.num_samples, max_t=self.max_t)
            exact = False  # ASHA stops runs early
        return SearchPlan(sizes, reruns, sum(sizes) + reruns, epochs + reruns * self.max_t, exact)

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
    def from_record(cls, d: Any, where: str | Path = "the experiment's record") -> SearchSpace:
        """The space an experiment recorded (search/experiment/record.py), checked by the rules
        a space file is checked by: the record may be damaged or edited, and everything that
        reads it (results, retrain, --resume) trusts what it says. Each failure is one
        ConfigError naming `where` and the key."""
        path = Path(where)
        if not isinstance(d, dict):
            raise err(path, "record", f"expected a mapping, got {type(d).__name__}")
        space = parse_space(path, _raw_of_record(path, d))
        space_file = d.get("space_file")
        if not isinstance(space_file, str) or len(space_file) > 4096:
            raise err(path, "space_file", f"expected the path of the space file, got {shown(space_file)}")
        return replace(space, path=Path(space_file))

    def check_params(self, params: Any, where: str) -> dict[str, Any]:
        """A trial's searched values, as an experiment's files give them: every searched key,
        inside its recorded distribution, and with the fixed values a valid TrainConfig (the
        files may be damaged or edited, and a retrain trains what they say). Each failure is
        one ConfigError naming `where` and the key."""
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: not a mapping of parameters")
        out = {}
        for d in self.dists:
            value = params.get(d.key)
            if not d.contains(value):
                raise ConfigError(f"{where}: {d.key}={shown(value)} lies outside the searched range ({d.describe()})")
            out[d.key] = value
        try:
            self.fixed.with_overrides(out)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return out

    def with_num_samples(self, n: int | None) -> SearchSpace:
        """--num-samples, if given, in place of the file's."""
        if n is not None and not 1 <= n <= MAX_NUM_SAMPLES:
            raise ConfigError(f"--num-samples {n}: must lie in [1, {MAX_NUM_SAMPLES:,}]")
        return self if n is None else replace(self, num_samples=n)

    def with_resources(self, cpus: float | None, gpus: float | None) -> SearchSpace:
        return replace(
            self,
            cpus_per_trial=self.cpus_per_trial if cpus is None else cpus,
            gpus_per_trial=self.gpus_per_trial if gpus is None else gpus,
        )


def load_space(path: Path) -> SearchSpace:
    path = Path(path).expanduser().resolve()
    return parse_space(path, read_yaml_mapping(path))


def _raw_of_record(path: Path, d: dict[str, Any]) -> dict[str, Any]:
    """A record (SearchSpace.to_record) in a space file's shape, for `parse_space`. Records
    written before a setting existed get what those searches ran with."""
    dists = d.get("dists")
    if not isinstance(dists, list) or not all(isinstance(x, dict) for x in dists):
        raise err(path, "dists", "expected a list of distributions")
    space: dict[str, Any] = {}
    for x in dists:
        key, kind = x.get("key"), x.get("type")
        if not isinstance(key, str) or key in space:
            raise err(path, "dists", f"a distribution's key is missing or repeated ({shown(key)})")
        spec = {"type": kind, **{k: x.get(k) for k in DIST_KEYS.get(kind, ())}} if isinstance(kind, str) else kind
        if kind in ("randint", "lograndint"):  # recorded as floats (Dist.low/high)
            spec.update({k: int(v) for k in ("low", "high") if isinstance(v := spec[k], float) and v.is_integer()})
        space[key] = spec
    fixed = d.get("fixed")
    if isinstance(fixed, dict):  # the record keeps every TrainConfig value, the searched ones at their defaults
        fixed = {k: v for k, v in fixed.items() if k not in space}
    sched = d.get("scheduler")
    if isinstance(sched, dict) and sched.get("type") == "halving":
        sched = {k: v for k, v in sched.items() if k != "max_t"}  # the last budget says it
    searcher = d.get("searcher")
    if isinstance(searcher, dict):
        searcher = {k: v for k, v in searcher.items() if k != "sampler"}
        searcher.setdefault("n_startup_trials", OPTUNA_STARTUP)
    reeval = d.get("reevaluate")
    if isinstance(reeval, dict) and reeval.get("top") == 0 and reeval.get("seeds") == 0:
        reeval = None  # the step was off
    return {
        "num_samples": d.get("num_samples"),
        "fixed": fixed,
        "space": space,
        "baseline": d.get("baseline"),
        "scheduler": sched,
        "searcher": searcher,
        "reevaluate": reeval,
        "resources": d.get("resources"),
    }


def parse_space(path: Path, raw: dict[str, Any]) -> SearchSpace:
    """A space file's mapping (or a record's, in that shape) -> a checked SearchSpace."""
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
    if not 0 <= seed <= MAX_SEARCHER_SEED:  # TPE's numpy generator takes seed + trials so far
        raise err(path, "searcher.seed", f"must lie in [0, {MAX_SEARCHER_SEED:,}]")
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
    space = SearchSpace(
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
    if reevaluate.on:  # the reruns' seeds follow fixed.seed
        key = "reevaluate.cap" if reevaluate.auto else "reevaluate.seeds"
        check_seeds(fixed.seed, len(space.rerun_seeds) + 1, f"{path}: {key}")
    return space


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
