"""The GPU slice: one short run per experiment family on one GPU, throughput and wall times.

    scripts/gpu_check.sh [--device cuda|cpu] [--size full|smoke] [--budget-s 480] [--out DIR]

Each slice runs in its own process (a crash or a hang costs that slice, not the others), in the
order below, each with what the budget (--budget-s) leaves:

1. kd: the paper recipe of logit_kd (RepDistiller: SGD 0.05, batch 64, crop + flip, wd 5e-4)
   for one epoch of a resnet56 teacher, then one KD epoch of a resnet20 student from it (online
   teacher), on CIFAR-100 in torchvision's layout (synthetic: no download).
2. slimming: network_slimming's paper recipe, VGG-19 on CIFAR-10 (synthetic): one epoch with
   λ = 1e-4 on the BN scales, 70% of the channels pruned under one global threshold, one
   fine-tuning epoch; parameters and MACs before and after.
3. ptq: a CIFAR ResNet (resnet20, CIFAR-10 synthetic) trained one epoch, then post-training
   fake quantization (W8A8, W4A8: calibrated on 1,000 training images) evaluated on the device,
   and int8 on the CPU where lib.quant.int8 supports the model.
4. lottery: the paper protocol of lottery_ticket on Fashion-MNIST (LeNet-300-100, Adam 1.2e-3,
   batch 60, 50k iterations, evaluation every 100, 5 seeds, iterative pruning, ticket and
   reinit, packed), one pruning level: 15 trials. It leaves the benchmark 150 s.
5. benchmark: scripts/benchmark.py on this device (lab vs bare loop, packed K = 1/4/16/64, fp32 vs
   bf16, the IMP job), its own file in <out>/../benchmark/.

Writes <out>/<gpu>.md and .json (a slug of the device's name); exits 1 when any slice failed or
ran out of time, after writing what the others measured. `--size smoke --device cpu` runs the
same code at a few steps (the test suite does). Data: $DATA_DIR must hold Fashion-MNIST (or the
Debian package); the CIFAR sets are written into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SLICES = ("kd", "slimming", "ptq", "lottery", "benchmark")
RESERVE_S = {"lottery": 150.0}  # seconds a slice leaves to the ones after it (full size)
# CIFAR training and test images, lottery iterations and seeds at each size. The synthetic sets
# are not the official sizes (50,000 / 10,000): a file of the official length must carry the
# official MD5 (lib.data), which synthetic data cannot
SIZES = {"full": dict(cifar_train=49_000, cifar_test=9_000, lottery_iters=50_000, seeds=5),
         "smoke": dict(cifar_train=300, cifar_test=100, lottery_iters=40, seeds=2)}


def cifar_splits(name: str, device, size: str):
    from lib import data

    val = 5000 if size == "full" else 50
    return data.load(name, val_size=val, download=False).to(device)


def one_epoch(recipe, batch: int | None = None):
    """`recipe` cut to one epoch, evaluated once at its end (milestones stay fractions)."""
    return replace(recipe, epochs=1.0, iterations=0, eval_every=0,
                   batch_size=batch or recipe.batch_size, patience=0)


def trained(model_name: str, splits, recipe, seed: int = 0, **kw):
    import torch

    from lib import models
    from lib.train import train

    torch.manual_seed(seed)
    model = models.build(model_name, splits.input_shape, splits.num_classes).to(splits.train_x.device)
    res = train(model, splits, recipe, seed=seed, **kw)
    return model, res


def result_row(name: str, res, **extra) -> dict:
    return dict(name=name, images_per_s=round(res.images_per_s, 1), train_s=round(res.wall_s, 2),
                test_acc=res.final["test_acc"], **extra)


def slice_kd(device, size: str) -> list[dict]:
    from experiments.logit_kd.config import for_scale
    from lib.distill.kd import kd_criterion

    cfg = for_scale("paper", "resnet20")
    splits = cifar_splits(cfg.setup.dataset, device, size)
    recipe = one_epoch(cfg.setup.train)
    teacher, tres = trained(cfg.teacher.model, splits, one_epoch(cfg.teacher.train))
    teacher.eval()
    _, sres = trained(cfg.setup.model, splits, recipe, seed=1,
                      criterion=kd_criterion(teacher, alpha=cfg.alpha, T=cfg.T))
    return [result_row(f"teacher {cfg.teacher.model}, 1 epoch", tres),
            result_row(f"KD student {cfg.setup.model} (online teacher), 1 epoch", sres)]


def slice_slimming(device, size: str) -> list[dict]:

    from experiments.network_slimming.config import for_scale
    from lib.metrics import count_macs, count_params
    from lib.prune import structured
    from lib.prune.slimming import SlimmingHook
    from lib.prune.surgery import prune_channels
    from lib.train import evaluate, train

    cfg = for_scale("paper")
    splits = cifar_splits(cfg.setup.dataset, device, size)
    lam, ratio = 1e-4, 0.7
    model, res = trained(cfg.setup.model, splits, one_epoch(cfg.setup.train), hooks=[SlimmingHook(lam)])
    shape = splits.input_shape
    before = dict(params=count_params(model), macs=count_macs(model, shape))
    keep = structured.select_global(structured.importance("bn_gamma", model), ratio, cfg.min_keep)
    pruned = prune_channels(model, keep).to(device)
    pruned_acc = evaluate(pruned, splits.test_x, splits.test_y)[1]
    after = dict(params=count_params(pruned), macs=count_macs(pruned, shape))
    fres = train(pruned, splits, one_epoch(cfg.finetune), seed=0)
    return [result_row(f"{cfg.setup.model}, sparsity training (λ={lam:g}), 1 epoch", res, **before),
            dict(name=f"pruned {ratio:.0%} of channels (no fine-tuning)", test_acc=pruned_acc, **after),
            result_row("fine-tuned, 1 epoch", fres, **after)]


def slice_ptq(device, size: str) -> list[dict]:
    import copy


    from experiments.quantization.config import for_scale
    from lib.quant import int8, qat
    from lib.quant.quantizer import QuantSpec
    from lib.train import evaluate

    cfg = for_scale("paper", "lenet_300_100")
    splits = cifar_splits("cifar10", device, size)
    model, res = trained("resnet20", splits, one_epoch(cfg.setup.train))
    model.eval()
    rows = [result_row("resnet20, float, 1 epoch", res)]
    sample = splits.train_x[:1000]
    for bits in (8, 4):
        start = time.perf_counter()
        q = qat.prepare(copy.deepcopy(model), weight_spec=QuantSpec(bits=bits, per_channel=True),
                        act_spec=QuantSpec(bits=8))
        qat.calibrate_model(q, sample)
        acc = evaluate(q, splits.test_x, splits.test_y)[1]
        rows.append(dict(name=f"PTQ fake-quant W{bits}A8 (on the device)", test_acc=acc,
                         seconds=round(time.perf_counter() - start, 2)))
    cpu = copy.deepcopy(model).cpu().eval()
    try:
        int8.check_int8_supported(cpu)
    except Exception as e:  # noqa: BLE001 - a stated limit of the eager flow, not a failure
        rows.append(dict(name="int8 (CPU, lib.quant.int8)", note=f"not run: {e}"))
        return rows
    start = time.perf_counter()
    q8 = int8.to_int8(cpu, sample[:256].cpu())
    acc = evaluate(q8, splits.test_x.cpu(), splits.test_y.cpu())[1]
    rows.append(dict(name="int8 (CPU, lib.quant.int8)", test_acc=acc,
                     seconds=round(time.perf_counter() - start, 2)))
    return rows


def slice_benchmark(device, size: str, work: Path) -> list[dict]:
    out = work / "benchmark"
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--devices", str(device.type),
           "--out", str(out), *(["--quick"] if size == "smoke" else [])]
    subprocess.run(cmd, check=True, cwd=ROOT)
    md = next(out.glob("*.md"))
    return [dict(name="scripts/benchmark.py", file=md.name, text=md.read_text())]


def slice_lottery(device, size: str, work: Path) -> list[dict]:
    import csv

    n = SIZES[size]
    cmd = [sys.executable, "-m", "experiments.lottery_ticket", "--scale", "paper",
           "--dataset", "fashion_mnist", "--device", str(device.type), "--levels", "1",
           "--seeds", str(n["seeds"]), "--iterations", str(n["lottery_iters"])]
    if size == "smoke":
        cmd += ["--train-limit", "600", "--val-size", "200", "--test-limit", "300", "--eval-every", "20"]
    env = {**os.environ, "LAB_RUNS_DIR": str(work / "runs"), "LAB_RESULTS_DIR": str(work / "results")}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    trials = list(csv.DictReader(open(work / "results" / "lottery_ticket" / "paper" / "trials.csv")))
    steps = sum(int(t["final_step"]) for t in trials)
    rows = []
    for level in sorted({t["level"] for t in trials}):
        for variant in sorted({t["variant"] for t in trials if t["level"] == level}):
            ts = [t for t in trials if t["level"] == level and t["variant"] == variant]
            accs = [float(t["test_acc"]) for t in ts]
            rows.append(dict(name=f"level {level} ({float(ts[0]['weights_left']):.1%} left), {variant}",
                             trials=len(ts), test_acc=sum(accs) / len(accs),
                             pack_size=ts[0].get("pack_size", ""),
                             images_per_s=round(float(ts[0]["images_per_s"]), 1)))
    rows.append(dict(name="whole command (start-up, 2 levels, evaluation, report)",
                     seconds=round(wall, 1), trial_steps=steps,
                     trial_images_per_s=round(steps * 60 / wall, 1), command=" ".join(cmd[1:])))
    return rows


def fail(msg: str) -> None:
    """One line on stderr, exit 2, before any compute (the lab's rule for bad input)."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def error_text(stderr: str) -> str:
    """The traceback of a failed child without PyTorch's dispatcher listing: its 'File' lines
    and the exception, the last 12 of them."""
    keep = [ln for ln in stderr.splitlines()
            if ln.startswith(("Traceback", "  File", "error:")) or re.match(r"^[\w.]+(Error|Exception)\b", ln)]
    return "\n".join(ln[:400] for ln in keep[-12:]) or stderr[-1000:]


def run_slice(name: str, device_name: str, size: str, work: Path, out: Path) -> None:
    """The child process: one slice, its rows as JSON in `out`."""
    import torch

    device = torch.device(device_name)
    fn = {"kd": slice_kd, "slimming": slice_slimming, "ptq": slice_ptq}.get(name)
    start = time.perf_counter()
    rows = fn(device, size) if fn else {"benchmark": slice_benchmark, "lottery": slice_lottery}[name](
        device, size, work)
    out.write_text(json.dumps(dict(rows=rows, seconds=time.perf_counter() - start)))


def markdown(result: dict) -> str:
    runs = result.get("combined")
    how = (f"The latest successful run of each slice, from {len(runs)} invocations of this script "
           "(each slice names its own below). " if runs else
           f"`{result['command']}`, {result['date']}, {result['wall_s']:.0f} s wall in all. ")
    lines = [f"# GPU check: {result['device_name']}", "", how +
             f"Machine: {result['machine']}. Data: synthetic CIFAR-10/100 in torchvision's layout "
             f"({result['sizes']['cifar_train']:,} training images), Fashion-MNIST (real). wandb "
             "disabled. Accuracies after one epoch on synthetic data say the path runs and learns; "
             "they are not the papers' numbers.", ""]
    for name in result["order"]:
        s = result["slices"][name]
        lines += [f"## {name}: {s['status']} ({s['seconds']:.0f} s)", ""]
        if result.get("combined"):
            lines += [f"From `{s['command']}`, {s['date']}.", ""]
        if s.get("error"):
            lines += ["```", s["error"].strip()[-2000:], "```", ""]
        rows = [r for r in s.get("rows", []) if "text" not in r]
        keys = [k for k in ("images_per_s", "train_s", "test_acc", "params", "macs", "trials",
                            "pack_size", "seconds", "trial_steps", "trial_images_per_s", "note")
                if any(k in r for r in rows)]
        if rows:
            lines += ["| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
            for r in rows:
                cells = [r.get(k, "") for k in keys]
                cells = [f"{c:.4f}" if isinstance(c, float) and c < 1 else
                         f"{c:,.1f}" if isinstance(c, float) else f"{c:,}" if isinstance(c, int) else str(c)
                         for c in cells]
                lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
            lines.append("")
        for r in s.get("rows", []):
            if "command" in r:
                lines += [f"Command: `python {r['command']}`", ""]
            if "text" in r:
                lines += [f"Written to `{r['file']}` beside this file; its tables:", ""]
                lines += [ln.replace("# ", "### ", 1) if ln.startswith("## ") else ln
                          for ln in r["text"].splitlines()[3:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--size", default="full", choices=sorted(SIZES), help="full, or smoke (a few steps)")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all slices together")
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check"))
    p.add_argument("--only", default=",".join(SLICES), help="comma-separated slices, from " + ", ".join(SLICES))
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="write <out>/<gpu>.md/.json from earlier results of one device instead of "
                        "running: each slice's latest successful run (after rerunning failed "
                        "slices with --only)")
    p.add_argument("--render", metavar="JSON",
                   help="rewrite <out>/<gpu>.md from an earlier result's .json (after this script's "
                        "text changes), running nothing")
    p.add_argument("--slice", help=argparse.SUPPRESS)  # the child's entry
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.slice:
        run_slice(a.slice, a.device, a.size, Path(a.work), Path(a.result))
        return 0
    if a.render:
        return write(json.loads(Path(a.render).read_text()), Path(a.out))
    if a.combine:
        return write(combine([json.loads(Path(f).read_text()) for f in a.combine]), Path(a.out))
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    if any(s not in SLICES for s in only) or not only:
        fail(f"--only: choose from {', '.join(SLICES)}, got '{a.only}'")
    import torch

    from experiments.common import machine

    if a.device not in ("cuda", "cpu"):
        fail(f"device: choose from cuda, cpu, got '{a.device}'")
    if a.device == "cuda" and not torch.cuda.is_available():
        fail("device: cuda requested but no CUDA device is available (use --device cpu)")
    device_name = torch.cuda.get_device_name(0) if a.device == "cuda" else machine().split(";")[0]
    start, sizes = time.perf_counter(), SIZES[a.size]
    result = dict(device_name=device_name, machine=machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  command="scripts/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
                  sizes=sizes, order=only, slices={})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sys.path.insert(0, str(ROOT / "tests"))
        from synthetic_data import write_cifar

        write_cifar(work / "data", 10, sizes["cifar_train"], sizes["cifar_test"], seed=10)
        write_cifar(work / "data", 100, sizes["cifar_train"], sizes["cifar_test"], seed=100)
        fashion = os.environ.get("DATA_DIR")
        if fashion:  # Fashion-MNIST where the caller keeps it, beside the synthetic CIFAR sets
            for f in Path(fashion).rglob("*-ubyte*"):
                dest = work / "data" / f.relative_to(fashion)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(f.resolve())
        env = {**os.environ, "DATA_DIR": str(work / "data"), "WANDB_MODE": "disabled",
               "PYTHONUNBUFFERED": "1"}
        if fashion and (Path(fashion) / "fashion-mnist").is_dir():  # for scripts/bare_imp.py
            env["FASHION_DIR"] = str(Path(fashion).resolve() / "fashion-mnist")
        for name in only:
            left = a.budget_s - (time.perf_counter() - start)
            if a.size == "full" and name != only[-1]:
                left -= RESERVE_S.get(name, 0.0)
            out = work / f"{name}.json"
            cmd = [sys.executable, __file__, "--slice", name, "--device", a.device, "--size", a.size,
                   "--work", str(work / name), "--result", str(out)]
            (work / name).mkdir()
            print(f"== {name} ({left:.0f} s left)", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)  # its own group: a timeout kills all
            try:
                stderr = proc.communicate(timeout=max(left, 1))[1]
                err = error_text(stderr) if proc.returncode else ""
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                err = f"ran out of time after {left:.0f} s\n" + error_text(proc.communicate()[1])[-1500:]
            print(err, file=sys.stderr, flush=True)
            s = json.loads(out.read_text()) if out.exists() and not err else {}
            finished = list((work / name / "runs").rglob("result.json"))
            if err and finished:  # what a slice that ran out of time still finished
                s["rows"] = [dict(name="trials finished before the end", trials=len(finished))]
            s.update(status="failed" if err else "ok", seconds=time.perf_counter() - t0,
                     command=result["command"], date=result["date"], **({"error": err} if err else {}))
            result["slices"][name] = s
            bench = work / name / "benchmark"
            if bench.exists():  # the benchmark's own files, beside ours
                for f in bench.glob("*.*"):
                    (Path(a.out).parent / "benchmark").mkdir(parents=True, exist_ok=True)
                    (Path(a.out).parent / "benchmark" / f.name).write_text(f.read_text())
    result["wall_s"] = time.perf_counter() - start
    return write(result, Path(a.out))


def combine(results: list[dict]) -> dict:
    """One result from several runs on one device: for each slice, its latest successful run
    (else its latest failure), each slice keeping the command and date that produced it."""
    if len({r["device_name"] for r in results}) != 1:
        fail("combine: the results come from different devices: "
             + ", ".join(sorted({r['device_name'] for r in results})))
    results = sorted(results, key=lambda r: r["date"])
    slices: dict = {}
    for r in results:
        for name, s in r["slices"].items():
            s = {"command": r["command"], "date": r["date"], **s}
            if s["status"] == "ok" or slices.get(name, {}).get("status") != "ok":
                slices[name] = s
    order = [n for n in SLICES if n in slices]
    last = results[-1]
    return dict(last, order=order, slices=slices, wall_s=sum(s["seconds"] for s in slices.values()),
                combined=[f"{r['command']} ({r['date']})" for r in results])


def write(result: dict, out_dir: Path) -> int:
    """<out>/<gpu>.md and .json; exit status 1 when a slice failed (named on stderr)."""
    from benchmark import slug  # scripts/benchmark.py names its files the same way

    out = out_dir / slug(result["device_name"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    failed = [n for n, s in result["slices"].items() if s["status"] != "ok"]
    if failed:
        print(f"error: gpu_check: slices failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
