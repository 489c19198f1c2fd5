"""The benchmark scripts run end to end at tiny settings, so they cannot rot unnoticed.

They run as subprocesses (sys.executable), exactly as a person runs them. Timings are not
checked (the CPU here is shared); the tables, the JSON keys and sane values are.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BENCH, REPO, benchmarks_on_path, run_script


def test_gpu_speed_quick(tmp_path: Path) -> None:
    with benchmarks_on_path():
        import gpu_speed
    out_json = tmp_path / "speed.json"
    proc = run_script([str(BENCH / "gpu_speed.py"), "--quick", "--device", "cpu", "--json", str(out_json)])
    assert gpu_speed.METRICS_HEADER in proc.stdout
    assert gpu_speed.PACKING_HEADER in proc.stdout
    assert "CPU run" in proc.stdout  # never mistaken for a GPU figure
    res = json.loads(out_json.read_text())
    assert set(gpu_speed.JSON_KEYS) <= set(res)
    assert res["device"] == "cpu" and res["peak_memory_kind"] == "cpu_maxrss"
    assert res["width"] == 4 and res["epochs"] == 2 and len(res["epoch_s_all"]) == 2
    assert res["images_per_s"] > 0 and res["epoch_s"] > 0 and res["peak_memory_bytes"] > 0
    assert math.isclose(res["images_per_s"], res["images"] / res["epoch_s"], rel_tol=1e-9)
    assert res["projected_24ep_s"] >= 24 * 50_000 / res["images_per_s"]
    assert res["projected_24ep_with_eval_s"] >= res["projected_24ep_s"]
    assert res["data_share"] > 0 and res["compile_s"] is None
    assert res["checkpoint_bytes"] > 0 and res["checkpoint_s"] > 0 and res["checkpoint_share"] > 0
    assert [row["procs"] for row in res["packing"]] == [1, 2]
    for row in res["packing"]:
        assert row["errors"] == []
        assert len(row["per_proc_images_per_s"]) == row["procs"]
        assert row["sum_per_proc_images_per_s"] == pytest.approx(sum(row["per_proc_images_per_s"]))
        # one wall window over all processes is never shorter than any one's own steady epochs
        assert 0 < row["aggregate_images_per_s"] <= row["sum_per_proc_images_per_s"] * 1.0001
        assert row["max_peak_memory_bytes"] > 0


def test_bench_fit_tiny(tmp_path: Path, mini: Path) -> None:
    with benchmarks_on_path():
        import bench_fit
    out_json = tmp_path / "fit.json"
    args = [
        "--width",
        "4",
        "--batch-size",
        "32",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--aug-images",
        "64",
        "--warmup-steps",
        "1",
    ]
    proc = run_script(
        [str(BENCH / "bench_fit.py"), *args, "--device", "cpu", "--data-dir", str(mini), "--json", str(out_json)]
    )
    assert bench_fit.TABLE_HEADER in proc.stdout
    assert bench_fit.AUG_HEADER in proc.stdout
    assert "fit/bare, same TensorLoader batches" in proc.stdout
    res = json.loads(out_json.read_text())
    assert set(res["runs"]) == {"fit_tensor", "fit_albu", "bare_tensor", "bare_premade"}
    for run in res["runs"].values():
        assert len(run["wall_images_per_s"]) == 1 and run["wall_images_per_s"][0] > 0
        assert len(run["step_s"]) == res["steps_per_run"]  # the step clock saw every step
    assert res["steps_per_run"] == 2 and res["width"] == 4
    assert all(v > 0 for v in res["augment_images_per_s"].values())
    assert all(len(r) == 2 and min(r) > 0 for r in (res["ratio_fit_bare_same_batches"], res["ratio_fit_bare_premade"]))


def test_bench_fit_missing_data_is_a_clean_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_fit.py"), "--data-dir", str(tmp_path / "nowhere"), "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "bench_fit: error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_search_packing_reads_a_real_search(search_experiment) -> None:
    """search_packing.py's figures (a GPU session takes them at 1, 0.5, 0.25 GPU per trial), from
    the shared real search: 6 ASHA trials of up to 3 epochs on 2 one-CPU slots."""
    with benchmarks_on_path():
        import search_packing
    exp, _ = search_experiment
    row = search_packing.summarize(exp, gpus=0, slots=2, epochs=3)
    assert row["runs_started"] == 6 and 1 <= row["runs_done"] < 6  # ASHA stopped some before epoch 3
    epochs = sum(len(f.read_text().splitlines()) for f in exp.glob("train_trial_*/result.json"))
    assert row["epochs"] == epochs and row["aggregate_images_per_s"] > 0 and 0 < row["busy_fraction"] <= 1
    assert row["runs_per_gpu_hour"] is None and row["peak_memory_bytes_max"] is None  # a CPU search
    assert search_packing.summarize(exp.parent / "missing", 0.5, 2, 3) is None
    # a trial Ctrl-C stopped before its first report has a folder but no result.json
    unreported = exp / "train_trial_00000000_9_unreported"
    unreported.mkdir()
    try:
        assert search_packing.summarize(exp, gpus=0, slots=2, epochs=3) == row
    finally:
        unreported.rmdir()


def test_gpu_results_reads_a_session_folder(tmp_path: Path) -> None:
    """gpu_results.json's figures are the session's own numbers, combined as documented."""
    with benchmarks_on_path():
        import gpu_results
    res = tmp_path / "res"
    res.mkdir()
    metrics = {
        "epochs": 24,
        "wall_s": 11.5,
        "device": "NVIDIA H200",
        "gpu_peak_memory_bytes": 1,
        "config": {"width": 64},
    }
    (res / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"epoch": e, "images_per_s": 50_000.0 if e == 1 else 90_000.0 + e} for e in range(1, 25)]
    (res / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (res / "train24_process_s.txt").write_text("15.250\n")
    search = {"results": [{"wall_s": 300.0, "aggregate_images_per_s": 45_000.0, "ran_to_the_end": True}]}
    (res / "default_search.json").write_text(json.dumps(search))
    out = tmp_path / "gpu_results.json"
    run_script([str(BENCH / "gpu_results.py"), str(res), "--out", str(out)], timeout=120)
    got = json.loads(out.read_text())
    assert set(gpu_results.KEYS) <= set(got)
    steady = 90_000.0 + 13  # the median of epochs 2..24; the first epoch's warm-up is left out
    assert got["steady_train_img_s"] == pytest.approx(steady)
    assert (got["device"], got["retrain_24ep_fit_s"], got["retrain_24ep_process_s"]) == ("NVIDIA H200", 11.5, 15.25)
    # the FLOP count of the real width-64 net: about 2.27 GFLOP per training image
    assert got["flop_per_image"] == pytest.approx(2.27e9, rel=0.05)
    assert got["mfu_dense_peak"] == pytest.approx(steady * got["flop_per_image"] / 989e12)
    assert got["default_search_wall_s"] == 300.0
    assert got["default_search_to_loop_ratio"] == pytest.approx(45_000.0 / steady)
    # a CPU dry run never passes for a GPU figure
    (res / "metrics.json").write_text(json.dumps({**metrics, "gpu_peak_memory_bytes": None, "device": "x86_64"}))
    run_script([str(BENCH / "gpu_results.py"), str(res), "--out", str(out)], timeout=120)
    assert json.loads(out.read_text())["device"].startswith("cpu")


def test_run_reuse_quick(tmp_path: Path) -> None:
    out = tmp_path / "reuse.json"
    proc = run_script([str(BENCH / "run_reuse.py"), "--quick", "--runs", "2", "--device", "cpu", "--json", str(out)])
    res = json.loads(out.read_text())
    assert proc.stdout.count("run ") == 2 and len(res["runs"]) == 2 and res["compile"] is False
    for row in res["runs"]:
        assert row["status"] == "completed" and row["steady_epoch_s"] > 0
        # the phases are parts of the run: nothing counted twice, nothing negative beyond noise
        assert row["setup_s"] >= 0 and row["build_s"] >= 0
        assert row["fit_s"] <= row["run_s"] + 1e-6
        assert row["fit_s"] >= row["steady_epoch_s"] + row["eval_s_per_epoch"]
    assert res["kept_s"] == pytest.approx(res["runs"][0]["run_s"] - res["runs"][1]["run_s"])
