"""`make benchmark` (scripts/benchmark.py --quick): it runs and writes both files with every
section. Timings are never asserted: they belong to the machine, not to the code. In the
`paper` tier (make test-paper, beside the GPU slice that runs the same script): its IMP-job
processes cost make test a minute it does not have."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench():
    """scripts/benchmark.py as a module."""
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.paper
def test_quick_benchmark_writes_every_section(bench, tmp_path):
    out = bench.main(["--quick", "--out", str(tmp_path)])
    assert out.parent == tmp_path and out.name == bench.slug(bench.machine().split(";")[0])
    result = json.loads(out.with_suffix(".json").read_text())
    cpu = result["devices"]["cpu"]
    assert [r["name"] for r in cpu["packed"]] == ["K = 1", "K = 4", "K = 16", "K = 64", bench.WIDE]
    for rows in [cpu[k] for k in ("loop", "packed", "packed_cnn", "packed_cnn_half", "eval", "precision",
                                  "matmul", "memory")] + [result["imp"]]:
        assert len(rows) >= 2 and rows[0]["ratio"] == 1 and all(r["median"] > 0 for r in rows)
    assert [r["name"] for r in cpu["matmul"]] == ["fp32", "bf16", bench.PEAK_ROW]
    # conv packs: alone, the lab's largest pack on a CPU (2 full vgg_narrows, 4 at half width), one
    # more, and 3x it
    assert [r["name"] for r in cpu["packed_cnn"]] == [
        "alone", "K = 2 (the lab's largest pack here)", "K = 3", "K = 6"]
    assert [r["name"] for r in cpu["packed_cnn_half"]][1:] == [
        "K = 4 (the lab's largest pack here)", "K = 5", "K = 12"]
    assert 0 < cpu["k16_peak"]["fraction"] and cpu["k16_peak"]["flops_per_image"] > 1e6
    assert 0 < cpu["k16_peak"]["wide_fraction"] and 0 < cpu["k16_peak"]["ceiling"] < 1
    md = out.with_suffix(".md").read_text()
    for title, _unit in bench.TITLES.values():
        assert f"## {title}" in md
    assert "fp32 matmul peak" in md and "cannot exceed" in md and result["machine"] in md


def test_every_committed_result_renders(bench):
    """`markdown()` renders every committed results/benchmark/*.json, whatever code wrote it: the
    ones this code wrote come back byte for byte as their .md; an older one (the 2026-11-27 GPU
    run: no batch-960 row, no memory section) still renders, without the rows it lacks."""
    files = sorted((ROOT / "results" / "benchmark").glob("*.json"))
    assert len(files) >= 3
    same = 0
    for path in files:
        result = json.loads(path.read_text())
        md = bench.markdown(result)
        assert md.startswith(f"# Benchmark: {result['machine']}") and "K = 16 runs at" in md, path.name
        peak = next(v["k16_peak"] for v in result["devices"].values() if "k16_peak" in v)
        assert ("one LeNet at batch 960" in md) == ("wide_fraction" in peak), path.name
        same += md.rstrip("\n") == path.with_suffix(".md").read_text().rstrip("\n")
    assert same >= 2  # both CPU runs, written by this code


def test_roofline_against_a_hand_computed_case(bench):
    """1 GFLOP per step at 200 GFLOP/s is 5 ms; 1M weights x 28 bytes = 28 MB of Adam traffic,
    1 ms at the faster of 28 GB/s (bandwidth) and 14 GB/s (Adam as measured): 5 / 6 of the peak."""
    r = bench.roofline(1e9, 1_000_000, 200.0, 28.0, 14.0)
    assert r == pytest.approx(dict(flops_ms=5.0, adam_mb=28.0, adam_ms=1.0, adam_measured_ms=2.0,
                                   ceiling=5 / 6))
    # Adam faster than the bandwidth (its state partly in cache): its own rate bounds the step
    assert bench.roofline(1e9, 1_000_000, 200.0, 14.0, 28.0)["adam_ms"] == pytest.approx(1.0)
    assert bench.add_gbps("cpu", mb=1, reps=1) > 0 and bench.adam_gbps("cpu", k=2, reps=1) > 0


def test_open_lth_copy_applies_only_the_import_fixes(bench, tmp_path):
    """`--open-lth DIR` runs a temporary copy of the checkout: the listed lines are replaced (and
    nothing else), the checkout itself is untouched, and Fashion-MNIST lies decoded in
    torchvision's MNIST raw layout under the copy's own HOME."""
    src = tmp_path / "checkout"
    originals = {}
    for rel, subs in bench.OPEN_LTH_COMPAT.items():
        text = "import torch\n" + "".join(f"{old}\n    pass\n" for old, _ in subs) + "keep = 1\n"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
        originals[rel] = text
    (src / "open_lth.py").write_text("print('hi')\n")
    with pytest.raises(SystemExit, match="--open-lth: no open_lth.py"):
        bench.open_lth_copy(tmp_path / "nowhere", tmp_path / "x")
    code = bench.open_lth_copy(src, tmp_path / "run")
    for rel, subs in bench.OPEN_LTH_COMPAT.items():
        assert (src / rel).read_text() == originals[rel]
        want = originals[rel]
        for old, new in subs:
            want = want.replace(old, new)
        assert (code / rel).read_text() == want and want != originals[rel]
    raw = code.parent / "home" / "open_lth_datasets" / "mnist" / "MNIST" / "raw"
    images = (raw / "t10k-images-idx3-ubyte").read_bytes()
    assert len(images) == 16 + 10000 * 28 * 28 and images[:4] == b"\x00\x00\x08\x03"
