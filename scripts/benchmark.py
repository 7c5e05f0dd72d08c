"""Speed of the lab on this machine, as ratios measured side by side (not a test: timings never
gate CI). Every comparison is interleaved (A, B, A, B, ...) over 3 rounds and reported as the
median of the per-round ratios: the VM's speed moves 2x between minutes, never within a round.

    python scripts/benchmark.py [--quick] [--out results/benchmark]

1. Training loop: the lab's `train` vs a bare 15-line PyTorch loop (LeNet-300-100, Adam, batch
   60), also with a mask hook and with evaluation on val + test every 250 steps (wall time).
2. Packed trials: K = 4, 16, 64 LeNets as one stacked model (`lib.packed_train`) vs one trial
   alone, total trial-images/s of training (evaluation left out), and K = 16's share of the
   fp32 matmul peak (the fastest of a few GEMM shapes, `PEAK_SHAPES`; a LeNet image costs 3x
   its forward FLOPs, `lib.metrics.count_flops`),
   beside one LeNet trained at batch 960 (K = 16's rows in one GEMM per layer, one optimiser),
   and the ceiling on that share (`roofline`) from the memory bandwidth (a += b on tensors far
   beyond the caches) and the pack's fused Adam alone, which moves 28 bytes per weight per step.
3. The small IMP job (3 levels x 2 epochs, batch 128, SGD 0.1), start-up included, vs the same
   job as a bare script (scripts/bare_imp.py) and, with --open-lth DIR, in open_lth.
   The same for a conv net, vgg_narrow at full and half width (SGD, batch 128, channels_last):
   alone, packed as large as the lab packs it here (`experiments.packing`: on a CPU the pack's
   largest activation stays within PACK_CACHE_BYTES), one more, and 3x that.
4. Evaluation: vgg_narrow over val + test, in the lab's CPU chunks (128 rows) against the
   10,000 rows (5,000 packed) it used before, alone and 3 packed.
5. Precision: a small CNN (vgg_small, batch 128) in fp32, fp32 channels_last and bf16
   channels_last.
Sections 1, 2, 4 and 5 run on CUDA too where present. Writes <out>/<machine-slug>.md and .json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.common import machine  # noqa: E402
from lib import data, models  # noqa: E402
from lib.metrics import count_flops  # noqa: E402
from lib.pack import PackedNet  # noqa: E402
from lib.packed_train import evaluate_packed, train_packed  # noqa: E402
from lib.prune.mask import Mask  # noqa: E402
from lib.train import TrainConfig, evaluate, make_optimizer, train  # noqa: E402

LENET, ADAM = "lenet_300_100", dict(optimizer="adam", lr=1.2e-3, batch_size=60)
WIDE = "one LeNet at batch 960 (images/s)"
LAB_JOB = "lab (python -m experiments.lottery_ticket)"
OPEN_LTH = "open_lth (open_lth.py lottery, its mnist_lenet_300_100 defaults)"
# fused Adam per weight and step: reads weight, gradient and both moments, writes back the
# weight and both moments, 7 fp32 values; no implementation can move less with the gradient in
# memory, which is where autograd leaves it
ADAM_BYTES = 7 * 4
BANDWIDTH = "a += b, two 128 MB tensors (a, b read, a written)"
ADAM_K16 = f"fused Adam step, K = 16 LeNets ({ADAM_BYTES} bytes per weight)"


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> list[dict]:
    """Each variant's value per round, the variants interleaved within a round; its median, and
    the median of its ratios to the first variant of the same round."""
    runs = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            runs[name].append(measure())
    base = runs[next(iter(variants))]
    return [dict(name=name, median=statistics.median(v), runs=v,
                 ratio=statistics.median(x / b for x, b in zip(v, base))) for name, v in runs.items()]


def bare_loop(splits: data.Splits, steps: int) -> float:
    """The loop anyone would write (images/s, wall)."""
    torch.manual_seed(0)
    model = models.build(LENET, splits.input_shape, splits.num_classes).to(splits.train_x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    x, y, b, step = splits.train_x, splits.train_y, 60, 0
    start = time.perf_counter()
    while step < steps:
        perm = torch.randperm(len(x), device=x.device)
        for i in range(min(len(x) // b, steps - step)):
            idx = perm[i * b:(i + 1) * b]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    loss.item()  # wait for the device
    return steps * b / (time.perf_counter() - start)


def lab_loop(splits: data.Splits, steps: int, eval_every: int = 0, mask: bool = False) -> float:
    """`lib.train.train` (images/s, wall, its evaluations included)."""
    torch.manual_seed(0)
    model = models.build(LENET, splits.input_shape, splits.num_classes).to(splits.train_x.device)
    hooks = [Mask.ones(model).hook(model)] if mask else []
    cfg = TrainConfig(**ADAM, iterations=steps, eval_every=eval_every or steps)
    start = time.perf_counter()
    train(model, splits, cfg, seed=0, hooks=hooks)
    return steps * 60 / (time.perf_counter() - start)


def seeded(name: str, k: int, device, shape=(1, 28, 28), classes: int = 10, **kw) -> list[torch.nn.Module]:
    """K models `name`, trial i initialised from seed i."""
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(models.build(name, shape, classes, **kw).to(device))
    return nets


def packed(splits: data.Splits, k: int, images: int) -> float:
    """Total trial-images/s of training K LeNets as one pack (K = 1: `train` alone)."""
    steps = max(2, images // (k * 60))
    cfg = TrainConfig(**ADAM, iterations=steps, eval_every=steps)
    nets = seeded(LENET, k, splits.train_x.device, splits.input_shape, splits.num_classes)
    if k == 1:
        return train(nets[0], splits, cfg, seed=0).images_per_s
    return train_packed(PackedNet(nets), splits, cfg, seeds=list(range(k)))[0].images_per_s


def wide(splits: data.Splits, batch: int, images: int) -> float:
    """Images/s of one LeNet trained alone at K = 16's rows per step (batch 960): one weight set
    and one optimiser, so each layer is one large GEMM. What a pack would reach if its K trials
    cost nothing apart; the reference for its share of the matmul peak."""
    net = seeded(LENET, 1, splits.train_x.device, splits.input_shape, splits.num_classes)[0]
    steps = max(2, images // batch)
    cfg = TrainConfig(**{**ADAM, "batch_size": batch}, iterations=steps, eval_every=steps)
    return train(net, splits, cfg, seed=0).images_per_s


def eval_speed(splits: data.Splits, chunk: int | None, packed_k: int = 0) -> float:
    """Images/s of evaluating vgg_narrow (channels_last, as the lab trains it) on val + test, in
    chunks of `chunk` rows (None: `evaluate`'s default for the device); with `packed_k`, K
    packed copies in one forward (trial-images/s)."""
    torch.manual_seed(0)
    nets = [models.build("vgg_narrow", splits.input_shape, splits.num_classes)
            .to(splits.train_x.device, memory_format=torch.channels_last) for _ in range(packed_k or 1)]
    x = torch.cat([splits.val_x, splits.test_x]).contiguous(memory_format=torch.channels_last)
    y = torch.cat([splits.val_y, splits.test_y])
    start = time.perf_counter()
    if packed_k:
        net = PackedNet(nets)
        net.channels_last = True  # as lib.packed_train runs a channels_last recipe
        evaluate_packed(net, x, y, chunk)
    else:
        evaluate(nets[0], x, y, chunk)
    return len(x) * len(nets) / (time.perf_counter() - start)


VGG_NARROW_HALF = (8, "M", 16, "M", 32, 32, "M")  # vgg_narrow with half its filters (l1 at 0.5)


def packed_cnn(splits: data.Splits, k: int, images: int, widths: tuple | None = None) -> float:
    """Total trial-images/s of training K vgg_narrows (SGD, batch 128, channels_last, as
    rethinking_pruning trains them) as one pack; K = 1: `train` alone."""
    steps = max(2, images // (k * 128))
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=128,
                      iterations=steps, eval_every=steps, channels_last=True)
    nets = seeded("vgg_narrow", k, splits.train_x.device, splits.input_shape, splits.num_classes,
                  widths=widths)
    if k == 1:
        return train(nets[0], splits, cfg, seed=0).images_per_s
    return train_packed(PackedNet(nets), splits, cfg, seeds=list(range(k)))[0].images_per_s


def cnn_pack_sizes(splits: data.Splits, widths: tuple | None, device: str) -> tuple[int, list[int]]:
    """The lab's largest pack of this net on `device` (`experiments.packing.pack_limit`), and the
    pack sizes to measure: 1, that, one above it and 3x it (where a CPU's cache stops a pack)."""
    from experiments.packing import pack_limit

    cap = pack_limit(lambda: models.build("vgg_narrow", splits.input_shape, splits.num_classes,
                                          widths=widths), splits.input_shape, 128, device)
    return cap, sorted({1, cap, cap + 1, 3 * cap})


def cnn(splits: data.Splits, steps: int, channels_last: bool, precision: str) -> float:
    torch.manual_seed(0)
    model = models.build("vgg_small", splits.input_shape, splits.num_classes).to(splits.train_x.device)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, iterations=steps,
                      eval_every=steps, channels_last=channels_last, precision=precision)
    return train(model, splits, cfg, seed=0).images_per_s


def matmul_gflops(device: str, dtype: torch.dtype, n: int = 1024, reps: int = 20,
                  shape: tuple[int, int, int] | None = None) -> float:
    """GFLOP/s of an (m x k) @ (k x n) product, `shape` = (m, k, n) (default: n x n square)."""
    m, k, n = shape or (n, n, n)
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    (a @ b).sum().item()  # warm up
    start = time.perf_counter()
    for _ in range(reps):
        c = a @ b
    c.sum().item()
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


# the peak probe's shapes: squares, and the widest GEMM of a LeNet step at batch 960 (the first
# layer's forward), which on some CPUs runs faster than any square
PEAK_SHAPES = ((512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (960, 784, 300))
PEAK_ROW = "fp32 peak: the best of 512², 1024², 2048², 960x784 @ 784x300 (--quick: 128², 256²)"


def peak_gflops(device: str, quick: bool) -> float:
    """The fp32 matmul peak: the fastest of PEAK_SHAPES (--quick: two small squares)."""
    shapes = ((128, 128, 128), (256, 256, 256)) if quick else PEAK_SHAPES
    return max(matmul_gflops(device, torch.float32, shape=s, reps=20 if s[0] < 2048 else 5)
               for s in shapes)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def add_gbps(device: str, mb: int = 128, reps: int = 10) -> float:
    """Memory bandwidth: GB/s moved by `a += b` on two `mb` MB fp32 tensors (a and b read, a
    written; far beyond the caches), the pattern of an in-place optimiser step."""
    a = torch.ones(mb * 2 ** 20 // 4, device=device)
    b = torch.ones_like(a)
    a.add_(b)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a.add_(b)
    sync(device)
    return 3 * a.numel() * 4 * reps / (time.perf_counter() - start) / 1e9


def adam_gbps(device: str, k: int = 16, reps: int = 20) -> float:
    """The pack's optimiser alone (`lib.train.make_optimizer`: fused Adam) over K LeNets' stacked
    weights with gradients in place, as GB/s of the ADAM_BYTES per weight it must move."""
    params = list(PackedNet(seeded(LENET, k, device)).stacked)
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make_optimizer(params, TrainConfig(**ADAM, iterations=1))
    opt.step()
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        opt.step()
    sync(device)
    return ADAM_BYTES * sum(p.numel() for p in params) * reps / (time.perf_counter() - start) / 1e9


def roofline(flops_per_step: float, weights: int, peak_gflops: float, bandwidth_gbps: float,
             adam_gbps: float) -> dict:
    """The best share of the matmul peak a training step can reach when its FLOPs run at the
    peak and its optimiser, after the backward as in PyTorch, moves its ADAM_BYTES per weight at
    the faster of the measured bandwidth and its own measured rate: t_flops / (t_flops + t_adam).
    Times in ms, sizes in MB."""
    t_flops = flops_per_step / peak_gflops / 1e6
    adam_mb = ADAM_BYTES * weights / 1e6
    t_adam = adam_mb / max(bandwidth_gbps, adam_gbps)
    return dict(flops_ms=t_flops, adam_mb=adam_mb, adam_ms=t_adam, adam_measured_ms=adam_mb / adam_gbps,
                ceiling=t_flops / (t_flops + t_adam))


def imp_job(bare: bool, quick: bool) -> float:
    """Seconds of wall time for the small IMP job, run as a user would, in a fresh folder."""
    job = ["--levels", "1" if quick else "2", "--epochs", "1" if quick else "2", "--batch-size", "128",
           "--lr", "0.1"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LAB_RUNS_DIR": f"{tmp}/runs", "LAB_RESULTS_DIR": f"{tmp}/results",
               "WANDB_DIR": tmp, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
        lab = ["-m", "experiments.lottery_ticket", "--scale", "smoke" if quick else "default", "--seeds", "1",
               "--variants", "ticket", "--optimizer", "sgd", "--eval-every", "0"]
        bare_script = [str(ROOT / "scripts" / "bare_imp.py"), *(["--train-limit", "2000"] if quick else [])]
        cmd = [sys.executable, *(bare_script if bare else lab), *job]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


# open_lth (github.com/facebookresearch/open_lth, 2ce732f, 2020) does not import under torch 2.14
# or numpy 2. These substitutions, applied to a temporary copy, change imports only, never what
# it computes: its multi-GPU wrappers list their bases in an order Python now rejects (they are
# never used on one device), and numpy 2 renamed `product` to `prod`.
OPEN_LTH_COMPAT = {
    "models/base.py": [("class DataParallel(Model, torch.nn.DataParallel):",
                        "class DataParallel(torch.nn.DataParallel):"),
                       ("class DistributedDataParallel(Model, torch.nn.parallel.DistributedDataParallel):",
                        "class DistributedDataParallel(torch.nn.parallel.DistributedDataParallel):")],
    "training/optimizers.py": [("np.product(", "np.prod(")],
}


def open_lth_copy(source: Path, tmp: Path) -> Path:
    """A copy of the open_lth checkout at `source` with `OPEN_LTH_COMPAT` applied, and its
    MNIST folder holding Fashion-MNIST (the same IDX layout and sizes; this machine has no MNIST)
    in torchvision's raw layout, under a HOME of its own. Returns the copy's folder."""
    if not (source / "open_lth.py").is_file():
        raise SystemExit(f"--open-lth: no open_lth.py in {source}")
    code = tmp / "open_lth"
    shutil.copytree(source, code, ignore=shutil.ignore_patterns(".git"))
    for rel, subs in OPEN_LTH_COMPAT.items():
        text = (code / rel).read_text()
        for old, new in subs:
            text = text.replace(old, new)
        (code / rel).write_text(text)
    raw = tmp / "home" / "open_lth_datasets" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.IDX_FILES.values():
        src = data.DEBIAN_FASHION_MNIST / f"{name}.gz"
        if not src.is_file():
            raise SystemExit(f"--open-lth: needs {src} (apt-get install dataset-fashion-mnist)")
        (raw / name).write_bytes(gzip.decompress(src.read_bytes()))
    return code


def open_lth_job(code: Path, quick: bool) -> float:
    """Seconds of wall time for the same IMP job in open_lth (its LeNet-300-100 defaults: SGD 0.1,
    batch 128, global pruning 20% a level, the output layer kept), start-up included, each time
    in a fresh output folder."""
    job = ["--levels", "1" if quick else "2", "--training_steps", "20it" if quick else "2ep"]
    home = code.parent / "home"
    shutil.rmtree(home / "open_lth_data", ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "open_lth.py", "lottery", "--default_hparams=mnist_lenet_300_100", *job],
                   check=True, env={**os.environ, "HOME": str(home)}, cwd=code, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sections(device: str, quick: bool, rounds: int) -> dict:
    full = data.load("fashion_mnist", **(dict(train_limit=3000) if quick else {})).to(device)
    n = 100 if quick else 1000  # the loops' own two evaluations on `small` cost next to nothing
    small = replace(full, val_x=full.val_x[:n], val_y=full.val_y[:n], test_x=full.test_x[:n],
                    test_y=full.test_y[:n])
    steps, images, cnn_steps = (20, 2400, 4) if quick else (1500, 120_000, 50)
    out = {"loop": interleaved({
        "bare PyTorch loop": lambda: bare_loop(small, steps),
        "lab loop": lambda: lab_loop(small, steps),
        "lab loop + mask hook": lambda: lab_loop(small, steps, mask=True),
        "lab loop + mask + eval (val+test) every 250 steps": lambda: lab_loop(full, steps, 250, True)},
        rounds)}
    out["packed"] = interleaved({**{f"K = {k}": (lambda k=k: packed(small, k, images)) for k in (1, 4, 16, 64)},
                                 WIDE: lambda: wide(small, 16 * 60, images)}, rounds)
    cnn_images = 1536 if quick else 30_720
    for key, widths in (("packed_cnn", None), ("packed_cnn_half", VGG_NARROW_HALF)):
        cap, sizes = cnn_pack_sizes(small, widths, device)
        out[key] = interleaved({
            ("alone" if k == 1 else f"K = {k}") + " (the lab's largest pack here)" * (k == cap):
            (lambda k=k, w=widths: packed_cnn(small, k, cnn_images, w)) for k in sizes}, rounds)
    ev = small if quick else full
    out["eval"] = interleaved({
        "chunks of 10,000 rows (the lab's before)": lambda: eval_speed(ev, 10_000),
        "chunks of the lab's default (128 rows on a CPU)": lambda: eval_speed(ev, None),
        "3 packed, chunks of 5,000 rows (before)": lambda: eval_speed(ev, 5000, 3),
        "3 packed, the lab's default": lambda: eval_speed(ev, None, 3)}, rounds)
    out["precision"] = interleaved({
        "fp32": lambda: cnn(small, cnn_steps, False, "fp32"),
        "fp32 channels_last": lambda: cnn(small, cnn_steps, True, "fp32"),
        "bf16 channels_last": lambda: cnn(small, cnn_steps, True, "bf16")}, rounds)
    size = 256 if quick else 1024
    out["matmul"] = interleaved({"fp32": lambda: matmul_gflops(device, torch.float32, size),
                                 "bf16": lambda: matmul_gflops(device, torch.bfloat16, size),
                                 PEAK_ROW: lambda: peak_gflops(device, quick)}, rounds)
    out["memory"] = interleaved({BANDWIDTH: lambda: add_gbps(device, 8 if quick else 128),
                                 ADAM_K16: lambda: adam_gbps(device)}, rounds)
    lenet = models.build(LENET, full.input_shape, full.num_classes)
    flops = 3 * count_flops(lenet, full.input_shape)  # forward + backward (2x forward)
    k16 = next(r for r in out["packed"] if r["name"] == "K = 16")["median"]
    one = next(r for r in out["packed"] if r["name"] == WIDE)["median"]
    peak = next(r for r in out["matmul"] if r["name"] == PEAK_ROW)["median"]
    memory = {r["name"]: r["median"] for r in out["memory"]}
    weights = 16 * sum(p.numel() for p in lenet.parameters())
    out["k16_peak"] = dict(flops_per_image=flops, fraction=k16 * flops / 1e9 / peak,
                           wide_fraction=one * flops / 1e9 / peak,
                           **roofline(16 * 60 * flops, weights, peak, memory[BANDWIDTH], memory[ADAM_K16]))
    return out


TITLES = {"loop": ("Training loop, LeNet-300-100, Adam, batch 60", "images/s (wall)"),
          "packed": ("Packed trials, LeNet-300-100, Adam, batch 60", "trial-images/s (training)"),
          "packed_cnn": ("Packed trials, vgg_narrow, SGD, batch 128, channels_last",
                         "trial-images/s (training)"),
          "packed_cnn_half": ("Packed trials, vgg_narrow at half width (8-16-32-32), SGD, batch 128, "
                              "channels_last", "trial-images/s (training)"),
          "eval": ("Evaluation, vgg_narrow on val + test (15,000 images; --quick: 200)",
                   "images/s"),
          "precision": ("Precision, vgg_small, SGD, batch 128", "images/s (training)"),
          "matmul": ("Matrix product, square (1024 x 1024; --quick: 256)", "GFLOP/s"),
          "memory": ("Memory bandwidth (--quick: 8 MB tensors)", "GB/s"),
          "imp": ("The small IMP job, start-up included, on CUDA where present", "wall s")}


def markdown(result: dict) -> str:
    lines = [f"# Benchmark: {result['machine']}", "",
             f"`{result['command']}`, {result['date']}, {result['wall_s']:.0f} s wall. Each row is "
             f"the median of {result['rounds']} interleaved rounds; ratio: the median of the per-round "
             "ratios to the first row of its table.", ""]
    for device, secs in [*result["devices"].items(), ("", {"imp": result["imp"]})]:
        for key, (title, unit) in TITLES.items():
            if key not in secs:
                continue
            lines += [f"## {title}" + f" ({device})" * bool(device), "", f"| | {unit} | ratio |",
                      "|---|---:|---:|"]
            lines += [f"| {r['name']} | {r['median']:,.{2 if key == 'imp' else 0}f} | {r['ratio']:.2f} |"
                      for r in secs[key]]
            lines.append("")
        rows = {r["name"]: r for r in secs.get("imp", [])}
        if OPEN_LTH in rows:
            lab, other = rows[LAB_JOB], rows[OPEN_LTH]
            ratio = statistics.median(o / b for o, b in zip(other["runs"], lab["runs"]))
            lines += [f"The lab's job is {ratio:.1f}x faster than open_lth's (median of the per-round "
                      "ratios). open_lth runs from a copy with three import fixes for torch 2.14 and "
                      "numpy 2 (`OPEN_LTH_COMPAT` in scripts/benchmark.py), on Fashion-MNIST in its "
                      "MNIST folder.", ""]
        if "k16_peak" in secs:
            p = secs["k16_peak"]
            wide = ("; one LeNet at batch 960, the same rows per step with one weight set and one "
                    f"optimiser, at {100 * p['wide_fraction']:.0f}%") if "wide_fraction" in p else ""
            lines += [f"Packed K = 16 runs at {100 * p['fraction']:.0f}% of the fp32 matmul peak "
                      f"({p['flops_per_image'] / 1e6:.2f} MFLOP per trial-image, forward + backward)"
                      f"{wide}.", ""]
            if "ceiling" in p:
                lines += [f"The ceiling on that share: a K = 16 step's FLOPs take {p['flops_ms']:.1f} ms at "
                          f"the peak, and then its fused Adam moves {p['adam_mb']:.0f} MB ({ADAM_BYTES} bytes "
                          f"per weight), {p['adam_ms']:.1f} ms at the faster of the two rates above "
                          f"({p['adam_measured_ms']:.1f} ms as measured). So a K = 16 step that runs its "
                          f"optimiser after its backward, as PyTorch does, cannot exceed "
                          f"{100 * p['ceiling']:.0f}% of the peak on this machine, even with every GEMM "
                          "at the peak.", ""]
    return "\n".join(lines)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmark"))
    p.add_argument("--open-lth", metavar="DIR", default="",
                   help="also time the IMP job in open_lth, from a checkout of "
                        "github.com/facebookresearch/open_lth at DIR (a temporary copy is run)")
    p.add_argument("--devices", default="cpu,cuda",
                   help="comma-separated, from cpu, cuda (cuda only where present; default both)")
    a = p.parse_args(argv)
    wanted = [d.strip() for d in a.devices.split(",") if d.strip()]
    if not wanted or any(d not in ("cpu", "cuda") for d in wanted):
        p.error(f"--devices: choose from cpu, cuda, got '{a.devices}'")
    rounds, start = 1 if a.quick else 3, time.perf_counter()
    devices = {d: sections(d, a.quick, rounds) for d in wanted
               if d == "cpu" or torch.cuda.is_available()}
    jobs = {"bare script (scripts/bare_imp.py)": lambda: imp_job(True, a.quick),
            LAB_JOB: lambda: imp_job(False, a.quick)}
    with tempfile.TemporaryDirectory() as tmp:
        if a.open_lth:
            code = open_lth_copy(Path(a.open_lth).resolve(), Path(tmp))
            jobs[OPEN_LTH] = lambda: open_lth_job(code, a.quick)
        imp = interleaved(jobs, rounds)
    command = "python scripts/benchmark.py" + " --quick" * a.quick + f" --devices {a.devices}" * (
        a.devices != "cpu,cuda") + " --open-lth <checkout>" * bool(a.open_lth)
    result = dict(machine=machine(), command=command,
                  date=time.strftime("%Y-%m-%d %H:%M"), rounds=rounds, devices=devices, imp=imp,
                  wall_s=time.perf_counter() - start)
    out = Path(a.out) / slug(machine().split(";")[0])  # the CPU, its cores and the GPU
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return out


if __name__ == "__main__":
    main()
