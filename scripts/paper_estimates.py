"""Paper-scale wall time of every experiment on one GPU and on this CPU: estimated, not run.

    python scripts/paper_estimates.py [--gpu results/gpu_check/<card>.json]
        [--cpu results/benchmark/<cpu>.json] [--out results/paper_estimates]

Work: each experiment's paper preset as its command line builds it (`--scale paper`, nothing
else): the trainings it runs and the training images each processes (epochs x training images,
or iterations x batch). Training only: evaluation, pruning, calibration and reports are left
out; a pruned network is costed at its unpruned network's rate and a budget ("up to", scratch-B)
at its cap, so these are upper bounds; a distillation whose teacher runs on every batch (online:
the presets augment) adds the teacher's forward pass, costed as a third of its training step.

Rates (training images per second, fp32), measured on each machine by the lab's own commands
and committed, never timed here:
- GPU: the card that `make gpu-check` measured (results/gpu_check/<card>.json: resnet56,
  resnet20, VGG-19, the packed paper-protocol lottery) and `make benchmark` on it beside
  (results/benchmark/: LeNet-300-100 in the lab loop, vgg_small).
- CPU: `make benchmark` on this CPU, run alone (results/benchmark/<cpu>.json: LeNet-300-100 in
  the lab loop and packed K = 16, vgg_small).
A model not measured on a machine gets the rate of the measured model nearest to it in MACs,
scaled by the MAC ratio; its row says "scaled by MACs" and from which model. Compute-bound
convolutions scale about so; small models that are bound by kernel launches or Python scale
worse, so treat those rows as rough.

Writes <out>/<cpu>.md: the whole table, and <out>/<cpu>/<experiment>.md: each experiment's rows,
for its README.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # the lab; scripts/benchmark.py

EXPERIMENTS = ("lottery_ticket", "lottery_ablation", "network_slimming", "rethinking_pruning",
               "filter_importance", "quantization", "logit_kd", "feature_kd", "rkd",
               "compression_pipeline")
TEACHER_FORWARD = 1 / 3  # a forward pass, as a share of a training step (forward + backward)


@dataclass(frozen=True)
class Job:
    """`count` trainings of `model` on `dataset`, `images` training images in all."""

    what: str
    model: str
    dataset: str
    batch: int
    count: int
    images: float
    teacher: str = ""  # a model whose forward pass runs on every batch
    packed: bool = False  # trials trained K at a time as one stacked model


def job(what: str, count: int, setup, recipe, model: str = "", teacher: str = "",
        packed: bool = False) -> Job:
    """`count` trainings with `recipe` on `setup`'s data (the teacher only when it runs online)."""
    per = recipe.iterations * recipe.batch_size if recipe.iterations else recipe.epochs * setup.n_train()
    length = f"{recipe.iterations:,} iterations" if recipe.iterations else f"{recipe.epochs:g} epochs"
    return Job(f"{what}: {count} x {length}", model or setup.model, setup.dataset, recipe.batch_size,
               count, count * per, teacher if recipe.augment else "", packed)


def teacher_job(t, shared: str = "") -> Job:
    return job(f"teacher {t.model}{shared}", 1, t, t.train)


def work(name: str, c) -> list[Job]:
    """The trainings of experiment `name`'s paper config `c` (see the module docstring)."""
    s, n = c.setup, c.seeds
    if name == "lottery_ticket":  # per seed: the dense net, then each level's ticket and reinit
        return [job("LeNet trials (packed)", n * (1 + c.levels * len(c.variants)), s, s.train, packed=True)]
    if name == "lottery_ablation":
        from experiments.lottery_ablation.__main__ import SeedRun
        from experiments.lottery_ablation.config import SUPERMASK_WEIGHTS

        levels = max(c.levels) if s.mode == "iterative" else len(c.levels)
        retrained = len({k for _, k in SeedRun.retrained(SimpleNamespace(cfg=c), 1)})
        out = [job("LeNet trials (packed)", n * (1 + levels * retrained), s, s.train, packed=True)]
        if "supermask" in c.studies:
            out.append(job("learned supermasks", n * len(SUPERMASK_WEIGHTS), s, s.supermask_train))
        return out
    if name == "network_slimming":
        return [job(f"{s.model}, λ = 0 and {len(c.lams)} penalties", n * (1 + len(c.lams)), s, s.train),
                job("fine-tunings of the pruned nets", n * len(c.lams) * len(c.ratios), s, c.finetune)]
    if name == "rethinking_pruning":
        from experiments.rethinking_pruning.config import LOTTERY_METHODS, METHODS, scaled

        cut = sum(len(c.ratios(m)) for m in METHODS)  # (method, ratio) pairs
        lr0 = s.train.lr
        other = [lr for lr in c.lottery_lrs if lr != lr0]
        lottery = sum(len(c.ratios(m)) for m in LOTTERY_METHODS) * (len(c.lottery_lrs) + len(other))
        return [job("large models", n * (2 + len(other)), s, s.train),
                job("fine-tunings", n * cut, s, c.finetune),
                job("scratch-E", n * cut, s, s.train),
                job(f"scratch-B (at the cap, x{c.scratch_b_cap:g})", n * cut, s, scaled(s.train, c.scratch_b_cap)),
                job("lottery ticket / random init at other rates", n * lottery, s, s.train)]
    if name == "filter_importance":
        return [job("baselines", n, s, s.train),
                job("fine-tunings", n * len(c.criteria) * len(c.ratios), s, c.finetune)]
    if name == "quantization":  # per model: its float nets, then QAT at each width + the float control
        return [j for m, ft in c.models() for j in (
            job(f"float {m.model}", n, m, m.train),
            job(f"QAT ({len(c.qat_bits)} widths) + float control, {m.model}", n * (len(c.qat_bits) + 1), m, ft))]
    if name in ("logit_kd", "feature_kd", "rkd"):
        spec = getattr(c, "teacher", None) or s.teacher  # rkd keeps it in its setup
        t = spec.model
        out = [teacher_job(spec, " (shared by logit_kd, feature_kd and rkd: trained once)")]
        if name == "logit_kd":
            m = c.methods
            out += [job("students alone", n, s, s.train), job("KD", n * ("kd" in m), s, s.train, teacher=t),
                    job("DML peers", n * c.dml_peers * ("dml" in m), s, s.train),
                    job("Born-Again generations", n * c.ban_generations * ("ban" in m), s, s.train, teacher=s.model),
                    job("Label Refinery (up to)", n * c.refinery_max * ("lr" in m), s, s.train, teacher=s.model)]
            if "ta" in m:  # the assistant is the kd arm's trial unless it is another model
                small, other = c.ta_student, c.assistant if c.assistant not in ("", s.model) else ""
                out += [job("TA assistants", n * bool(other or "kd" not in m), s, s.train,
                            model=other or s.model, teacher=t),
                        job(f"TA: {small} alone", n, s, s.train, model=small),
                        job(f"TA: {small} by KD", n, s, s.train, model=small, teacher=t),
                        job(f"TA: {small} by KD from the assistant", n, s, s.train, model=small,
                            teacher=other or s.model)]
            return [j for j in out if j.count]
        alone = n * ("student" in c.methods)
        out += [job("students alone", alone, s, s.train),
                job("distilled students", n * len(c.methods) - alone, s, s.train, teacher=t)]
        if name == "feature_kd":  # one stage 1 per two-stage family (FitNet, FSP) and seed
            from experiments.feature_kd.config import RECIPES
            two = sorted({RECIPES[m].feature for m in c.methods if RECIPES[m].two_stage})
            out.append(job(f"stage 1 of {' and '.join({'fitnet': 'FitNet', 'fsp': 'FSP'}[f] for f in two)}"
                           f" (lower layers: costed whole)", n * len(two), s, c.hint_train, teacher=t))
        return [j for j in out if j.count]
    if name == "compression_pipeline":
        t = c.teacher.model
        return [teacher_job(c.teacher), job("students alone", n, s, s.train),
                job("KD students", n, s, s.train, teacher=t),
                job("pruned + KD fine-tunings", n, s, c.finetune, teacher=t),
                job("QAT", n * len(c.qat_bits), s, c.qat, teacher=t)]
    raise ValueError(f"experiment: unknown '{name}', choose from {', '.join(EXPERIMENTS)}")


def paper_config(name: str):
    """The config `python -m experiments.<name> --scale paper` runs."""
    return importlib.import_module(f"experiments.{name}.__main__").EXPERIMENT.parse(["--scale", "paper"])[0]


def macs(model: str, dataset: str) -> int:
    from lib import data, models
    from lib.metrics import count_macs

    shape, classes, _ = data.SHAPES[dataset]
    return count_macs(models.build(model, shape, classes), shape)


@dataclass(frozen=True)
class Rate:
    images_per_s: float
    basis: str  # where it comes from, for the table


def bench_measured(bench: dict, device: str) -> dict[tuple[str, tuple, bool], float]:
    """(model, input shape, packed) -> training images/s from a scripts/benchmark.py result."""
    from lib import data

    rows = bench["devices"][device]
    pick = lambda table, name: next(r["median"] for r in rows[table] if r["name"] == name)
    shape = data.SHAPES["fashion_mnist"][0]  # the benchmark trains on Fashion-MNIST
    return {("lenet_300_100", shape, False): pick("loop", "lab loop"),
            ("lenet_300_100", shape, True): pick("packed", "K = 16"),
            ("vgg_small", shape, False): pick("precision", "fp32")}


def gpu_measured(check: dict) -> dict[tuple[str, tuple, bool], float]:
    """(model, input shape, packed) -> training images/s from a gpu_check result."""
    from lib import data

    rows = {name: s.get("rows", []) for name, s in check["slices"].items() if s["status"] == "ok"}
    picks = [("resnet56", "cifar100", False, "kd", 0, "images_per_s"),  # the KD slice's teacher
             ("resnet20", "cifar10", False, "ptq", 0, "images_per_s"),
             ("vgg19", "cifar10", False, "slimming", 0, "images_per_s"),  # with the BN-γ penalty
             ("lenet_300_100", "fashion_mnist", True, "lottery", -1, "trial_images_per_s")]
    out = {}
    for model, dataset, packed, slice_, i, key in picks:
        if rows.get(slice_):
            row = rows[slice_][i]
            assert model in row["name"] or slice_ == "lottery", (model, row["name"])
            out[model, data.SHAPES[dataset][0], packed] = row[key]
    return out


def scaled_rate(model: str, dataset: str, packed: bool, measured: dict, macs_of) -> Rate:
    """The measured rate of (model, its input shape, packed), else the unpacked measured model
    nearest in MACs scaled by the MAC ratio."""
    from lib import data

    shape = data.SHAPES[dataset][0]
    if (model, shape, packed) in measured:
        return Rate(measured[model, shape, packed], "measured" + (", packed" if packed else ""))
    m = macs_of(model, dataset)
    refs = [(abs(math.log(macs_of(rm, d) / m)), rm, d, r) for (rm, sh, p), r in measured.items()
            if not p for d in [next(k for k, v in data.SHAPES.items() if v[0] == sh)]]
    _, rm, d, r = min(refs)
    return Rate(r * macs_of(rm, d) / m, f"scaled by MACs from {rm} on {d}")


def seconds(j: Job, rate) -> float:
    """Wall seconds of `j`: its images over its model's rate, plus the teacher's forward passes."""
    per_image = 1 / rate(j.model, j.dataset, j.batch, j.packed).images_per_s
    if j.teacher:
        per_image += TEACHER_FORWARD / rate(j.teacher, j.dataset, j.batch, False).images_per_s
    return j.images * per_image


def hours(s: float) -> str:
    return f"{s / 3600:,.1f}" if s >= 360 else f"{s / 3600:.2f}"


def table(jobs: dict[str, list[Job]], gpu, cpu, card: str) -> list[str]:
    """Markdown rows: one per job, then each experiment's total."""
    lines = [f"| experiment | trainings (paper preset) | est. hours, {card} | basis | "
             "est. hours, this CPU | basis |", "|---|---|---:|---|---:|---|"]
    for name, js in jobs.items():
        g_all = c_all = 0.0
        for j in js:
            g, c = seconds(j, gpu), seconds(j, cpu)
            g_all, c_all = g_all + g, c_all + c
            who = j.model + (f" + {j.teacher} forward" if j.teacher else "")
            basis = lambda rate: "; ".join(  # noqa: E731
                f"{m}: {rate(m, j.dataset, j.batch, j.packed and m == j.model).basis}"
                for m in dict.fromkeys([j.model, j.teacher]) if m)
            lines.append(f"| {name} | {j.what} ({who}, batch {j.batch}, {j.images:,.0f} images) | "
                         f"{hours(g)} | {basis(gpu)} | {hours(c)} | {basis(cpu)} |")
        lines.append(f"| **{name}** | **total** | **{hours(g_all)}** | | **{hours(c_all)}** | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from benchmark import slug
    from experiments.common import machine

    here = slug(machine().split(";")[0])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", default=str(ROOT / "results" / "gpu_check" / "nvidia-h100-80gb-hbm3.json"),
                   help="a gpu_check result; its card's benchmark is read from results/benchmark/")
    p.add_argument("--cpu", default=str(ROOT / "results" / "benchmark" / f"{here}.json"),
                   help="scripts/benchmark.py's result on the CPU (default: this one's)")
    p.add_argument("--out", default=str(ROOT / "results" / "paper_estimates"))
    a = p.parse_args(argv)
    for field in ("gpu", "cpu"):
        if not Path(getattr(a, field)).exists():
            print(f"error: --{field}: no file {getattr(a, field)} (run make "
                  f"{'gpu-check' if field == 'gpu' else 'benchmark'} there first)", file=sys.stderr)
            return 2
    check, cpu_bench = (json.loads(Path(f).read_text()) for f in (a.gpu, a.cpu))
    card = check["device_name"]
    gpu_bench_file = ROOT / "results" / "benchmark" / f"{slug(check['machine'].split(';')[0])}.json"
    measured = {"gpu": gpu_measured(check), "cpu": bench_measured(cpu_bench, "cpu")}
    if gpu_bench_file.exists():  # the gpu_check's own rows first, the benchmark's where they lack
        measured["gpu"] = {**bench_measured(json.loads(gpu_bench_file.read_text()), "cuda"), **measured["gpu"]}
    mac_cache: dict = {}

    def macs_of(model: str, dataset: str) -> int:
        if (model, dataset) not in mac_cache:
            mac_cache[model, dataset] = macs(model, dataset)
        return mac_cache[model, dataset]

    def rate_on(where: str):
        return lambda model, dataset, batch, packed: scaled_rate(model, dataset, packed,
                                                                 measured[where], macs_of)

    jobs = {name: work(name, paper_config(name)) for name in EXPERIMENTS}
    rows = table(jobs, rate_on("gpu"), rate_on("cpu"), card)
    cpu_name = cpu_bench["machine"].split(";")[0]
    head = [f"Estimated, not run: each experiment's `--scale paper` preset, its trainings over "
            f"measured training throughput (fp32), by `python scripts/paper_estimates.py`. GPU: "
            f"{card}, the rates of `{check['command']}` ({check['date']}) and of "
            f"`{gpu_bench_file.name}` beside it. This CPU: {cpu_name}, the rates of "
            f"`{cpu_bench['command']}` ({cpu_bench['date']} UTC, run alone). A model not measured "
            "on a machine is scaled by MACs from the measured model nearest in MACs. Training "
            "only (no evaluation, pruning or calibration); pruned nets at their full net's rate "
            f"and budgets at their caps, so upper bounds; an online teacher's forward pass counts "
            f"{TEACHER_FORWARD:.2g} of its training step.", ""]
    out = Path(a.out) / slug(cpu_name)
    out.mkdir(parents=True, exist_ok=True)
    title = ["# Paper-scale wall time, estimated", ""]
    text = "\n".join([*title, *head, *rows]) + "\n"
    out.with_suffix(".md").write_text(text)
    for name in EXPERIMENTS:  # each experiment's rows, for its README
        mine = [r for r in rows[2:] if r.startswith((f"| {name} |", f"| **{name}** |"))]
        (out / f"{name}.md").write_text("\n".join([*title, *head, *rows[:2], *mine]) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
