"""Search-space YAML validation: before Ray starts, one clear line with the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s9tune.errors import ConfigError
from s9tune.search.space.space import load_space

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "num_samples": 4,
    "fixed": {"width": 8, "epochs": 3},
    "space": {
        "max_lr": {"type": "loguniform", "low": 0.05, "high": 2.0},
        "pct_start": {"type": "uniform", "low": 0.1, "high": 0.5},
        "aug_strength": {"type": "quniform", "low": 0.0, "high": 2.0, "q": 0.25},
        "batch_size": {"type": "choice", "values": [128, 256]},
        "seed": {"type": "randint", "low": 0, "high": 3},
    },
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"type": "optuna", "seed": 0},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25},
}


def write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def with_change(path: list[str], value) -> dict:
    import copy

    doc = copy.deepcopy(GOOD)
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()


@pytest.mark.parametrize("name", ["smoke.yaml", "default.yaml", "lr_centred.yaml"])
def test_shipped_spaces_are_valid(name: str) -> None:
    space = load_space(REPO / "search_spaces" / name)
    assert {d.key for d in space.dists} == {"max_lr", "pct_start", "aug_strength"}
    assert space.baseline == {"max_lr": 0.4, "pct_start": pytest.approx(5 / 24), "aug_strength": 1.0}


def test_smoke_space_is_cpu_sized() -> None:
    s = load_space(REPO / "search_spaces" / "smoke.yaml")
    assert s.fixed.width == 16 and s.fixed.epochs <= 6 and s.fixed.train_subset and s.gpus_per_trial == 0


def test_good_space_maps_to_optuna_distributions(tmp_path: Path) -> None:
    """The searcher asks Optuna with these distributions (bounds as written: high inclusive)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = load_space(write(tmp_path, GOOD))
    dists = {d.key: d.optuna_distribution() for d in space.dists}
    assert dists["max_lr"] == FloatDistribution(0.05, 2.0, log=True)
    assert dists["pct_start"] == FloatDistribution(0.1, 0.5)
    assert dists["aug_strength"] == FloatDistribution(0.0, 2.0, step=0.25)
    assert dists["batch_size"] == CategoricalDistribution([128, 256])
    assert dists["seed"] == IntDistribution(0, 3)
    assert space.max_t == 3 and space.gpus_per_trial == 0.25
    # the baseline defaults to TrainConfig's values for the searched keys, moved into the range
    assert space.baseline == {"max_lr": 0.4, "pct_start": 5 / 24, "aug_strength": 1.0, "batch_size": 128, "seed": 0}


@pytest.mark.parametrize(
    "path, value, needle",
    [
        (["bogus"], 1, "bogus: unknown key"),
        (["space", "max_lr", "type"], "gaussian", "space.max_lr.type: unknown distribution 'gaussian'"),
        (["space", "max_lr", "low"], 0.0, "space.max_lr.low: loguniform needs low > 0"),
        (["space", "max_lr", "low"], -1.0, "space.max_lr.low: loguniform needs low > 0"),
        (["space", "pct_start", "low"], 0.6, "space.pct_start: low (0.6) must be < high (0.5)"),
        (["space", "pct_start", "high"], "half", "space.pct_start.high: expected a number"),
        (["space", "pct_start", "high"], 1.5, "space.pct_start: pct_start=1.5"),
        (["space", "max_lr", "step"], 2, "space.max_lr: loguniform takes"),
        (["space", "pct_start"], 0.3, "space.pct_start: expected {type:"),
        (["space", "colour"], {"type": "choice", "values": [1]}, "space.colour: not a TrainConfig key"),
        (["space", "epochs"], {"type": "randint", "low": 2, "high": 4}, "space.epochs: cannot be searched"),
        (
            ["space", "val_size"],
            {"type": "uniform", "low": 0.1, "high": 0.2},
            "space.val_size: defines the validation split",
        ),
        (["space", "batch_size", "values"], [], "space.batch_size.values: expected a non-empty list"),
        (["space", "batch_size", "values"], [128, "big"], "batch_size='big'"),
        (["space", "seed", "low"], 0.5, "space.seed.low: expected an integer"),
        (["fixed", "width"], 0, "fixed: width=0"),
        (["fixed", "widht"], 8, "fixed.widht: unknown key"),
        (["fixed", "max_lr"], 0.1, "space.max_lr: is also under fixed"),
        (["num_samples"], 0, "num_samples: must lie in [1, 10,000]"),
        (["num_samples"], "many", "num_samples: expected an integer"),
        (["scheduler", "type"], "pbt", "scheduler.type: unknown scheduler 'pbt' (known: asha, halving)"),
        (["scheduler", "grace_period"], 9, "scheduler.grace_period: must lie in [1, epochs=3]"),
        (["scheduler", "reduction_factor"], 1, "scheduler.reduction_factor: must be > 1"),
        (["scheduler", "max_t"], 10, "scheduler.max_t: must equal fixed.epochs"),
        (["resources", "gpus_per_trial"], 1.5, "gpus_per_trial must be a fraction"),
        (["resources", "cpus_per_trial"], 0, "cpus_per_trial must be > 0"),
        (["resources", "tpus"], 1, "resources.tpus: unknown key"),
        (["space"], DELETE, "space: expected a non-empty mapping"),
        (["searcher", "n_startup_trials"], 0, "searcher.n_startup_trials: must lie in [1, 10,000]"),
        (["searcher", "n_startup_trials"], 2.5, "searcher.n_startup_trials: expected an integer"),
    ],
)
def test_bad_spaces(tmp_path: Path, path: list[str], value, needle: str) -> None:
    p = write(tmp_path, with_change(path, value))
    with pytest.raises(ConfigError) as err:
        load_space(p)
    assert str(err.value).startswith(str(p)), err.value
    assert needle in str(err.value), err.value


def test_tpe_start_up_is_a_quarter_of_the_configs_at_most_optunas_ten(tmp_path: Path) -> None:
    from s9tune.search.space.space import SearchSpace

    base = load_space(write(tmp_path, with_change(["num_samples"], 8)))
    assert base.startup_trials is None
    counts = {n: base.with_num_samples(n).n_startup_trials for n in (1, 3, 8, 24, 41, 1000)}
    assert counts == {1: 1, 3: 1, 8: 2, 24: 6, 41: 10, 1000: 10}
    named = load_space(write(tmp_path, with_change(["searcher", "n_startup_trials"], 30)))
    assert named.n_startup_trials == 30
    # the record keeps the count the search ran with; one written before the setting existed
    # resumes with Optuna's default, what that search used
    record = base.to_record()
    assert SearchSpace.from_record(record).n_startup_trials == 2
    del record["searcher"]["n_startup_trials"]
    assert SearchSpace.from_record(record).n_startup_trials == 10


def test_halving_scheduler(tmp_path: Path) -> None:
    space = load_space(
        write(tmp_path, with_change(["scheduler"], {"type": "halving", "budgets": [1, 3], "keep": 0.34}))
    )
    assert space.scheduler.type == "halving" and space.scheduler.budgets == (1, 3) and space.scheduler.keep == 0.34
    assert space.scheduler.rung_sizes(space.num_samples) == [4, 2]
    # the record the experiment stores gives the same space back (resume and results read it)
    from s9tune.search.space.space import SearchSpace

    again = SearchSpace.from_record(space.to_record())
    assert again.scheduler == space.scheduler and again.dists == space.dists and again.fixed == space.fixed
    one = load_space(write(tmp_path, with_change(["scheduler"], {"type": "halving", "budgets": [3]})))
    assert one.scheduler.rung_sizes(4) == [4]  # every config on the full schedule: the reference design


@pytest.mark.parametrize(
    "sched, needle",
    [
        ({"type": "halving", "keep": 0.5}, "scheduler.budgets: expected a list of epochs ending at fixed.epochs (3)"),
        ({"type": "halving", "budgets": [], "keep": 0.5}, "scheduler.budgets: expected a list"),
        ({"type": "halving", "budgets": [2, 1, 3], "keep": 0.5}, "scheduler.budgets: must increase strictly"),
        ({"type": "halving", "budgets": [1, 2], "keep": 0.5}, "the last budget (2) must equal fixed.epochs (3)"),
        ({"type": "halving", "budgets": [0, 3], "keep": 0.5}, "scheduler.budgets[0]: must be >= 1"),
        ({"type": "halving", "budgets": [1.5, 3], "keep": 0.5}, "scheduler.budgets[0]: expected an integer"),
        ({"type": "halving", "budgets": [1, 3]}, "scheduler.keep: missing"),
        ({"type": "halving", "budgets": [1, 3], "keep": 1.0}, "scheduler.keep: must lie strictly between 0 and 1"),
        ({"type": "halving", "budgets": [1, 3], "keep": 0}, "scheduler.keep: must lie strictly between 0 and 1"),
        ({"type": "halving", "budgets": [1, 3], "keep": "third"}, "scheduler.keep: expected a number"),
        ({"type": "halving", "budgets": [1, 3], "keep": 0.5, "grace_period": 1}, "scheduler.grace_period: unknown key"),
        ({"type": "asha", "budgets": [1, 3]}, "scheduler.budgets: unknown key"),
    ],
)
def test_bad_halving(tmp_path: Path, sched: dict, needle: str) -> None:
    p = write(tmp_path, with_change(["scheduler"], sched))
    with pytest.raises(ConfigError) as err:
        load_space(p)
    assert str(err.value).startswith(str(p)) and needle in str(err.value), err.value


def test_bad_baseline(tmp_path: Path) -> None:
    doc = with_change(
        ["baseline"], {"max_lr": 5.0, "pct_start": 0.2, "aug_strength": 1.0, "batch_size": 128, "seed": 0}
    )
    with pytest.raises(ConfigError, match=r"baseline\.max_lr: 5\.0 lies outside"):
        load_space(write(tmp_path, doc))
    doc = with_change(["baseline"], {"max_lr": 0.5})
    with pytest.raises(ConfigError, match="baseline: needs a value for every searched key"):
        load_space(write(tmp_path, doc))


def test_cli_rejects_bad_space_before_ray(tmp_path: Path) -> None:
    p = write(tmp_path, with_change(["space", "max_lr", "low"], 0.0))
    code = (
        "import sys; from s9tune.cli import main\n"
        f"rc = main(['search', '--space', {str(p)!r}, '--storage', {str(tmp_path / 's')!r}])\n"
        "assert 'ray' not in sys.modules, 'Ray was imported before validation'\n"
        "sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"s9tune: error: {p}: space.max_lr.low: loguniform needs low > 0, got 0.0"
    assert not (tmp_path / "s").exists()


def test_cli_rejects_bad_resources(tmp_path: Path) -> None:
    from s9tune.cli import main

    p = write(tmp_path, GOOD)
    assert main(["search", "--space", str(p), "--gpus-per-trial", "1.5", "--storage", str(tmp_path / "s")]) == 2
    assert main(["search", "--space", str(p), "--num-samples", "0", "--storage", str(tmp_path / "s")]) == 2
    assert main(["search", "--space", str(tmp_path / "missing.yaml")]) == 2
    assert not (tmp_path / "s").exists()


def test_preflight_rejects_unshared_storage_and_oversized_trials(tmp_path: Path, monkeypatch) -> None:
    """Checked before launch: resources that no node has, and a local storage path that another
    node cannot see (here the probe's answer is faked; test_cluster runs the real probe)."""
    from s9tune.search.execution import cluster

    space = load_space(write(tmp_path, GOOD)).with_resources(1, 0)
    nodes = [
        {"NodeID": "a" * 40, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4.0}},
        {"NodeID": "b" * 40, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 2.0}},
    ]
    monkeypatch.setattr(cluster, "_alive_nodes", lambda: nodes)
    monkeypatch.setattr(cluster, "nodes_not_seeing", lambda path, ns: ["10.0.0.2 (bbbbbbbb)"])
    with pytest.raises(cluster.ClusterError, match=r"node\(s\) 10\.0\.0\.2 \(bbbbbbbb\) cannot see"):
        cluster.preflight(space, str(tmp_path / "st"), "exp")
    assert not list((tmp_path / "st" / "exp").iterdir())  # the probe file is cleaned up
    # a URI is not probed; slots = 4 + 2 one-CPU trials
    assert cluster.preflight(space, "s3://bucket/searches", "exp") == 6
    with pytest.raises(cluster.ClusterError, match=r"asks for 0\.5 GPUs but the largest node has 0"):
        cluster.preflight(space.with_resources(1, 0.5), "s3://bucket/searches", "exp")
    with pytest.raises(cluster.ClusterError, match="asks for 8 CPUs but the largest node has 4"):
        cluster.preflight(space.with_resources(8, 0), "s3://bucket/searches", "exp")


def test_missing_tensorboardx_fails_loudly(monkeypatch) -> None:
    import sys

    from s9tune.errors import S9Error
    from s9tune.search.execution.runner import require_tensorboardx

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(S9Error, match=r"tensorboardX is not installed.*pip install tensorboardX"):
        require_tensorboardx()


def test_embedded_ray_is_private_and_its_dashboard_local(monkeypatch) -> None:
    """Without --address: a new Ray in-process (never a cluster that happens to run here), with
    the dashboard off; --dashboard binds it to 127.0.0.1 only, and says what to install without
    ray[default]. With $RAY_ADDRESS (what `ray job submit` sets) that cluster is joined."""
    import ray

    from s9tune.search.execution import cluster, ray_compat

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster.init_ray(None)
    assert calls[-1]["address"] == "local" and calls[-1]["include_dashboard"] is False
    monkeypatch.setattr(ray_compat, "dashboard_missing", lambda: None)
    cluster.init_ray(None, dashboard=True)
    assert calls[-1]["include_dashboard"] is True and calls[-1]["dashboard_host"] == "127.0.0.1"
    monkeypatch.setattr(ray_compat, "dashboard_missing", lambda: ImportError("No module named 'aiohttp'"))
    with pytest.raises(
        cluster.ClusterError, match=r"--dashboard needs Ray's dashboard packages: pip install 'ray\[default\]'"
    ):
        cluster.init_ray(None, dashboard=True)
    with pytest.raises(cluster.ClusterError, match="--dashboard is for the Ray that s9tune starts"):
        cluster.init_ray("10.0.0.1:6379", dashboard=True)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    cluster.init_ray(None)
    assert calls[-1]["address"] == "10.0.0.1:6379" and "include_dashboard" not in calls[-1]


def test_dashboard_refusal_leaves_nothing_behind(
    tmp_path: Path, tiny_cifar: Path, capsys: pytest.CaptureFixture
) -> None:
    from s9tune.cli import main
    from s9tune.search.execution.ray_compat import dashboard_missing

    if dashboard_missing() is None:
        pytest.skip("ray[default] is installed here: the dashboard would start")
    p = write(tmp_path, with_change(["fixed", "device"], "cpu"))
    args = [
        "search",
        "--space",
        str(p),
        "--data-dir",
        str(tiny_cifar),
        "--storage",
        str(tmp_path / "st"),
        "--name",
        "d",
    ]
    assert main([*args, "--dashboard"]) == 2
    err = capsys.readouterr().err
    assert "s9tune: error: --dashboard needs Ray's dashboard packages" in err and "Traceback" not in err
    assert not (tmp_path / "st" / "d").exists()  # a retry may use the same name


def test_unwritable_storage_is_one_line_and_creates_nothing(
    tmp_path: Path, tiny_cifar: Path, capsys: pytest.CaptureFixture
) -> None:
    from s9tune.cli import main

    p = write(tmp_path, with_change(["fixed", "device"], "cpu"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["search", "--space", str(p), "--data-dir", str(tiny_cifar), "--storage", str(blocker / "st")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    # a data error after the storage check leaves no storage folder behind either
    (tiny_cifar / "cifar-10-batches-py" / "test_batch").write_bytes(b"damaged")
    assert main(["search", "--space", str(p), "--data-dir", str(tiny_cifar), "--storage", str(tmp_path / "st2")]) == 2
    assert "s9tune: error:" in capsys.readouterr().err
    assert not (tmp_path / "st2").exists()


def test_an_address_where_nothing_listens_is_one_line_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One TCP attempt and one line: not Ray's 20 connection retries (counted, not timed)."""
    import socket

    import ray

    from s9tune.search.execution import cluster

    attempts: list[tuple] = []
    real = socket.create_connection

    def counting(addr, *args, **kwargs):
        attempts.append(addr)
        return real(addr, *args, **kwargs)

    monkeypatch.setattr(cluster.socket, "create_connection", counting)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was tried"))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # whatever earlier tests left running
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound and held, never listening: refused, and no one else can take it
        port = s.getsockname()[1]
        with pytest.raises(
            cluster.ClusterError, match=rf"nothing answers at 127.0.0.1:{port} .*ray start --head --port {port}"
        ):
            cluster.init_ray(f"127.0.0.1:{port}")
    assert attempts == [("127.0.0.1", port)]
    with pytest.raises(cluster.ClusterError, match="expected HOST:PORT or auto"):
        cluster.check_reachable("localhost:sixty")
