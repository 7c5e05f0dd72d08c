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
