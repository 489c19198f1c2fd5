"""Experiments on S3, against a real S3-compatible server on 127.0.0.1 (moto's `moto_server`,
with request signing checked): a search killed with SIGKILL and resumed from the bucket, then
`results` and `retrain` from the URI; a missing bucket and refused credentials as one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import SEARCH_SPACE, assert_resumed_not_restarted, kill_driver
from moto_s3 import BUCKET, moto_server, s3_client

pytestmark = pytest.mark.slow

# 4 trials x 3 epochs on 2 slots, no early stopping: a trial can be caught complete while two
# are yet to finish (trials reuse actors, so a third alone would race the kill)
SPACE = {
    **SEARCH_SPACE,
    "num_samples": 4,
    "fixed": {**SEARCH_SPACE["fixed"], "width": 4},
    "scheduler": {"type": "asha", "grace_period": 3, "reduction_factor": 2},
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield env


def s9tune(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s9tune", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def remote_rows(env: dict[str, str], prefix: str) -> dict[str, list[str]]:
    """result.json lines of every trial under s3://BUCKET/prefix, read back over the wire."""
    s3 = s3_client(env)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/result.json"):
                body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
                out[obj["Key"].split("/")[-2]] = body.splitlines()
    return out


def uploaded_finished(env: dict[str, str], prefix: str) -> set[str]:
    """Trial ids the newest experiment state in the bucket records as TERMINATED, read as plain
    JSON (Tune's trial entries are JSON strings; nothing in them is unpickled here)."""
    s3 = s3_client(env)
    keys = sorted(
        o["Key"]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        if o["Key"].rsplit("/", 1)[-1].startswith("experiment_state-")
    )
    if not keys:
        return set()
    state = json.loads(s3.get_object(Bucket=BUCKET, Key=keys[-1])["Body"].read())
    trials = [json.loads(entry[0]) for entry in state["trial_data"]]
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def state_stamp(env: dict[str, str], prefix: str) -> tuple[str, str] | None:
    """The newest experiment state in the bucket: its key and ETag (they change with each upload)."""
    objs = [
        o
        for o in s3_client(env).list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        if o["Key"].rsplit("/", 1)[-1].startswith("experiment_state-")
    ]
    newest = max(objs, key=lambda o: o["Key"], default=None)
    return (newest["Key"], newest["ETag"]) if newest else None


def journal_study(env: dict[str, str], key: str, tmp: Path, name: str):
    """The study `name` of an Optuna journal in the bucket, downloaded and read with Optuna."""
    from conftest import optuna_study

    s3 = s3_client(env)
    (tmp / "journal").mkdir()
    (tmp / "journal" / "optuna.journal").write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return optuna_study(tmp / "journal", name)


def terminated_trials(env: dict[str, str], uri: str) -> set[str]:
    """Trial ids the experiment state on S3 records as finished (read as `--resume` reads it)."""
    code = (
        "import json, sys; from ray.tune import ExperimentAnalysis; "
        "print(json.dumps([t.trial_id for t in ExperimentAnalysis(sys.argv[1]).trials if t.status == 'TERMINATED']))"
    )
    res = subprocess.run([sys.executable, "-c", code, uri], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("s9tune: error:")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    return lines[0]


def test_missing_bucket_and_bad_credentials_are_one_line(s3: dict[str, str], tmp_path: Path, mini: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    search = ["search", "--space", str(space), "--data-dir", str(tmp_path / "no-data-needed"), "--name", "x"]
    t = time.time()
    line = one_error(s9tune(s3, *search, "--storage", "s3://no-such-bucket/searches"))
    assert "the bucket 'no-such-bucket' does not exist" in line
    bad = {**s3, "AWS_SECRET_ACCESS_KEY": "wrong"}
    line = one_error(s9tune(bad, *search, "--storage", f"s3://{BUCKET}/searches"))
    assert "access denied; check the credentials" in line and "AWS_ENDPOINT_URL" in line
    assert time.time() - t < 120  # refused before the data is read (a missing dir) and before Ray starts
    line = one_error(s9tune(bad, "results", f"s3://{BUCKET}/searches/x"))
    assert "access denied" in line


def test_search_killed_and_resumed_on_s3_then_results_and_retrain(
    s3: dict[str, str], tmp_path: Path, mini: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    storage = f"s3://{BUCKET}/searches"
    cmd = [
        sys.executable,
        "-m",
        "s9tune",
        "search",
        "--space",
        str(space),
        "--data-dir",
        str(mini),
        "--storage",
        storage,
        "--name",
        "k",
    ]
    # Tune uploads the experiment (its state and the trials' rows) every second instead of its
    # adaptive period, so the bucket keeps up with the search this test watches and kills
    env = {**s3, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            time.sleep(0.5)
            # kill soon after the first complete trial: with 4 on 2 slots, two are unfinished
            if any(len(v) == 3 for v in remote_rows(s3, "searches/k/").values()):
                break
            assert proc.poll() is None, "search ended before it could be killed"
        else:
            pytest.fail("no trial completed on S3 in time")
        # then the upload that records it as finished in the experiment state: polled, not slept on
        while not uploaded_finished(s3, "searches/k/"):
            assert time.time() < deadline and proc.poll() is None, "search ended before it could be killed"
            time.sleep(0.2)
        # and the next upload's start, so that the one recording the finish is whole: a kill in the
        # middle of Tune's copy can leave a finished trial's rows behind its state (a known gap:
        # docs/clusters.md, "What to expect"; not what this test is about)
        stamp = state_stamp(s3, "searches/k/")
        while state_stamp(s3, "searches/k/") == stamp:
            assert time.time() < deadline and proc.poll() is None, "search ended before it could be killed"
            time.sleep(0.2)
    finally:
        kill_driver(proc)
    # finished before the kill = what the uploaded experiment state says, which is what a resume
    # restores (rows can reach the bucket in the same upload as a state that still has it running)
    rows = remote_rows(s3, "searches/k/")
    finished = terminated_trials(s3, f"{storage}/k")
    complete = {name: lines for name, lines in rows.items() if name.split("_")[2] in finished}
    assert complete, (finished, {k: len(v) for k, v in rows.items()})

    res = subprocess.run([*cmd, "--resume"], env=s3, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    final = remote_rows(s3, "searches/k/")
    assert len(final) == 4, {k: len(v) for k, v in final.items()}
    for name, lines in complete.items():
        assert final[name] == lines, f"{name} was rerun or changed"
    for lines in final.values():  # every trial ends its schedule, none restarted from scratch
        assert_resumed_not_restarted([json.loads(line)["epoch"] for line in lines], 3, rows_lost=True)
    assert f"aws s3 sync {storage}/k searches/k && tensorboard --logdir searches/k" in res.stdout
    # the search's Optuna journal is kept in the bucket too: every config once, with its final value
    study = journal_study(s3, "searches/k/optuna.journal", tmp_path, "k")
    done = {t.user_attrs["tune_trial_id"]: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert len(done) == 4 and all(t.state.name == "COMPLETE" or t.user_attrs.get("lost") for t in study.trials)
    assert done == pytest.approx({n.split("_")[2]: json.loads(v[-1])["val_accuracy"] for n, v in final.items()})

    exp = f"{storage}/k"
    out = s9tune(s3, "results", exp)
    assert out.returncode == 0 and "completed" in out.stdout and "Best config:" in out.stdout, out.stderr[-2000:]
    assert remote_rows(s3, "searches/k/") == final  # results only adds its files
    # the endpoint in the URI instead of AWS_ENDPOINT_URL
    host = s3["AWS_ENDPOINT_URL"].split("://", 1)[1]
    no_endpoint = {k: v for k, v in s3.items() if k != "AWS_ENDPOINT_URL"}
    out = s9tune(no_endpoint, "results", f"{exp}?endpoint_override={host}&scheme=http")
    assert out.returncode == 0 and "completed" in out.stdout, out.stderr[-2000:]
    rt = tmp_path / "rt"
    out = s9tune(s3, "retrain", exp, "--data-dir", str(mini), "--epochs", "1", "--set", "width=4", "--out", str(rt))
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads((rt / "metrics.json").read_text())
    assert m["experiment"] == exp and m["status"] == "completed"
