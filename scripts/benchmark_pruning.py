"""CPU inference speed of physically pruned models against the dense ones (issue 4, Speed).

    python scripts/benchmark_pruning.py [--repeats 20] [--channels-last] [--out PATH]

For each model (vgg_small and resnet20 on 1x28x28, vgg16 on 3x32x32; random weights: speed does
not depend on their values) and each fraction of channels removed from every prunable layer
(50%, 70%; ResNets prune only the inner conv of each block, see lib/prune/surgery.py), the
smaller model is built by surgery (`prune_structured`, L1 criterion) and timed in eval +
inference mode: latency of one image (`lib.metrics.latency_ms`, batch 1) and throughput on a
batch of 256 (`lib.metrics.throughput`), medians of `--repeats` runs after warm-up. Prints a
markdown table and writes it to results/filter_importance/speedup.md. Not a test: timings
never gate CI; run it alone on the machine (other jobs distort every number).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.common import machine  # noqa: E402
from lib.metrics import count_macs, count_params, latency_ms, throughput  # noqa: E402
from lib.models import build  # noqa: E402
from lib.prune.structured import prune_structured  # noqa: E402
from lib.report import markdown  # noqa: E402
from lib.runs import atomic_write_text  # noqa: E402

CASES = (("vgg_small", (1, 28, 28)), ("resnet20", (1, 28, 28)), ("vgg16", (3, 32, 32)))
RATIOS = (0.5, 0.7)
BIG_BATCH = 256


def measure(model: torch.nn.Module, shape: tuple[int, ...], repeats: int, channels_last: bool) -> dict:
    """Params, MACs, batch-1 latency (ms) and batch-256 throughput (images/s) on the CPU."""
    model = model.cpu().eval()
    g = torch.Generator().manual_seed(0)
    one, big = torch.randn(1, *shape, generator=g), torch.randn(BIG_BATCH, *shape, generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        one, big = (t.contiguous(memory_format=torch.channels_last) for t in (one, big))
    return {"params": count_params(model), "macs": count_macs(model, shape),
            "latency_ms": latency_ms(model, one, repeats=repeats),
            "throughput": throughput(model, big, repeats=repeats)}


def rows_for(name: str, shape: tuple[int, ...], repeats: int, channels_last: bool) -> list[dict]:
    torch.manual_seed(0)
    dense = build(name, shape, 10).eval()
    ref = measure(dense, shape, repeats, channels_last)
    rows = []
    for ratio in (0.0, *RATIOS):
        m = ref if ratio == 0 else measure(prune_structured(dense, "l1", ratio)[0], shape, repeats,
                                           channels_last)
        rows.append({
            "model": name, "input": "x".join(map(str, shape)),
            "channels removed": f"{ratio:.0%}",
            "params": f"{m['params']:,}", "MACs": f"{m['macs'] / 1e6:.1f}M",
            "MACs removed": f"{1 - m['macs'] / ref['macs']:.0%}",
            "latency b=1 (ms)": f"{m['latency_ms']:.2f}",
            "speedup b=1": f"{ref['latency_ms'] / m['latency_ms']:.2f}×",
            f"throughput b={BIG_BATCH} (img/s)": f"{m['throughput']:,.0f}",
            f"speedup b={BIG_BATCH}": f"{m['throughput'] / ref['throughput']:.2f}×",
        })
        print(f"{name} {ratio:.0%}: {rows[-1]['latency b=1 (ms)']} ms, "
              f"{rows[-1][f'throughput b={BIG_BATCH} (img/s)']} img/s", flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median)")
    p.add_argument("--channels-last", action="store_true", help="NHWC tensors and weights")
    p.add_argument("--out", default=str(ROOT / "results" / "filter_importance" / "speedup.md"))
    a = p.parse_args(argv)
    if a.repeats < 1:
        print(f"error: repeats: must be >= 1, got {a.repeats}", file=sys.stderr)
        raise SystemExit(2)
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    import pandas as pd

    rows = [r for name, shape in CASES for r in rows_for(name, shape, a.repeats, a.channels_last)]
    fmt = "channels_last (NHWC)" if a.channels_last else "contiguous (NCHW)"
    text = (f"# CPU inference speed of physically pruned models\n\n"
            f"`python scripts/benchmark_pruning.py{' --channels-last' if a.channels_last else ''}`: "
            f"random weights, L1 filter pruning of every prunable layer by surgery (ResNet: only "
            f"the inner conv of each block), {fmt} tensors, eval + inference mode. Latency: "
            f"median of {a.repeats} runs on 1 image; throughput: {BIG_BATCH} images over the "
            f"median batch time. Speedup against the dense row of the same model.\n\n"
            + markdown(pd.DataFrame(rows))
            + f"\nWall time {time.perf_counter() - start:.0f} s; load average before / after "
            f"{load0:.2f} / {os.getloadavg()[0]:.2f}. Machine: {machine()}.\n")
    atomic_write_text(Path(a.out), text)
    print(text)


if __name__ == "__main__":
    main()
