"""scripts/gpu_check.sh, the GPU slice of issue #14, run on the CPU: the whole slice at smoke
size (`paper` tier: make test-paper), and its failure path (a slice out of time is reported,
the others' results are still written, the exit code is 1)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def gpu_check(tmp_path: Path, *args: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess, dict, str]:
    env = {**os.environ, "LAB_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([str(SCRIPT), "--device", "cpu", "--size", "smoke", "--out",
                           str(tmp_path / "gpu_check"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    written = list((tmp_path / "gpu_check").glob("*.json"))
    assert len(written) == 1, proc.stderr[-2000:]
    return proc, json.loads(written[0].read_text()), written[0].with_suffix(".md").read_text()


@pytest.mark.paper
def test_the_whole_slice_runs_on_the_cpu_at_smoke_size(tmp_path):
    proc, result, md = gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["order"] == ["kd", "slimming", "ptq", "lottery", "benchmark"]
    slices = result["slices"]
    assert all(s["status"] == "ok" for s in slices.values())
    kd = {r["name"]: r for r in slices["kd"]["rows"]}
    assert set(kd) == {"teacher resnet56, 1 epoch", "KD student resnet20 (online teacher), 1 epoch"}
    assert all(r["images_per_s"] > 0 and 0 <= r["test_acc"] <= 1 for r in kd.values())
    slim = slices["slimming"]["rows"]
    assert slim[1]["params"] < slim[0]["params"] and slim[1]["macs"] < slim[0]["macs"]  # pruned
    assert [r["name"].split(" ")[0] for r in slices["ptq"]["rows"][:3]] == ["resnet20,", "PTQ", "PTQ"]
    lottery = slices["lottery"]["rows"]
    assert [r["trials"] for r in lottery[:-1]] == [2, 2, 2]  # level 0 ticket; level 1 reinit, ticket
    assert lottery[-1]["trial_steps"] == 6 * 40
    assert "--scale paper --dataset fashion_mnist" in lottery[-1]["command"]
    bench = tmp_path / "benchmark"  # the benchmark's own files, beside gpu_check/
    assert len(list(bench.glob("*.md"))) == 1 and len(list(bench.glob("*.json"))) == 1
    for heading in ("## kd: ok", "## slimming: ok", "## ptq: ok", "## lottery: ok", "## benchmark: ok",
                    "Packed trials"):
        assert heading in md


def test_a_slice_out_of_time_fails_loudly_and_the_rest_is_written(tmp_path):
    proc, result, md = gpu_check(tmp_path, "--only", "ptq,kd", "--budget-s", "0.5", timeout=120)
    assert proc.returncode == 1
    assert "error: gpu_check: slices failed: ptq, kd" in proc.stderr
    assert [s["status"] for s in result["slices"].values()] == ["failed", "failed"]
    assert "ran out of time" in result["slices"]["ptq"]["error"]
    assert "## ptq: failed" in md and "## kd: failed" in md


def test_bad_arguments_are_one_line(tmp_path):
    proc = subprocess.run([str(SCRIPT), "--only", "kd,nope"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--only: choose from kd, slimming, ptq, lottery, benchmark" in proc.stderr
    assert not (ROOT / "results" / "gpu_check" / "nope").exists()


def test_combine_keeps_each_slices_latest_success(tmp_path):
    """A rerun of the failed slices (--only) and the first run make one result: each slice's
    latest successful run, with the command and date that produced it."""
    def run(date, command, **status):
        return dict(device_name="GPU X", machine="m", date=date, command=command, sizes={"cifar_train": 1},
                    order=list(status), wall_s=1.0,
                    slices={n: dict(status=s, seconds=2.0, rows=[dict(name=f"{n} {date}")],
                                    **({"error": "boom"} if s == "failed" else {})) for n, s in status.items()})
    first = run("2026-01-01 10:00 UTC", "first", kd="failed", lottery="ok", benchmark="failed")
    second = run("2026-01-01 11:00 UTC", "second --only kd,benchmark", kd="ok", benchmark="failed")
    files = []
    for i, r in enumerate([second, first]):  # in any order: sorted by date
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(r))
    proc = subprocess.run([str(SCRIPT), "--combine", *map(str, files), "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "slices failed: benchmark" in proc.stderr  # still failed
    got = json.loads((tmp_path / "out" / "gpu-x.json").read_text())
    assert got["order"] == ["kd", "lottery", "benchmark"]
    assert {n: (s["status"], s["command"]) for n, s in got["slices"].items()} == {
        "kd": ("ok", "second --only kd,benchmark"), "lottery": ("ok", "first"),
        "benchmark": ("failed", "second --only kd,benchmark")}
    md = (tmp_path / "out" / "gpu-x.md").read_text()
    assert "from 2 invocations" in md and "From `first`, 2026-01-01 10:00 UTC." in md
    other = dict(first, device_name="GPU Y")
    files[1].write_text(json.dumps(other))
    proc = subprocess.run([str(SCRIPT), "--combine", *map(str, files), "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "combine: the results come from different devices: GPU X, GPU Y" in proc.stderr


def test_full_size_synthetic_cifar_is_not_the_official_length():
    """A synthetic file of the official length would have to carry the official MD5 (lib.data):
    the first GPU run met exactly that. Full size stays off the official counts."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    full = gpu_check.SIZES["full"]
    assert full["cifar_train"] // 5 != 10_000 and full["cifar_train"] != 50_000  # CIFAR-10 / -100 train
    assert full["cifar_test"] != 10_000
