"""Every experiment's `--scale paper` preset, run end to end in a real process (issue #14): the
paper's dataset (synthetic files in torchvision's exact layouts, conftest's
`synthetic_data_dir`), its models, recipe, schedule, augmentation and loss weights, cut only in
size: a few hundred images, one seed, a level / method / ratio or two, and `--budget` (every
training stage, teachers, fine-tuning and QAT included, runs that fraction of its steps, the
schedule keeping its shape). Each run must write trials.csv, table.md naming the paper's
recipe as the paper states it, its plots, claims.md + claims.csv (where the experiment has a
claims module), run.json and one offline wandb run per trained trial plus the report's.

Marked `paper`: `make test` leaves them out, `make test-paper` runs them (CI runs both).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cli import ROOT, run_experiment
from wandb_records import offline_runs

pytestmark = pytest.mark.paper

# the size cut shared by every run: 128 training images (one batch of the largest paper batch
# size), 16 for validation, 16 for testing (the latency batches are test images), one seed
SIZE = ("--seeds", "1", "--train-limit", "128", "--val-size", "16", "--test-limit", "16")

# experiment -> (dataset, its own flags, the recipe as its paper states it: phrases table.md
# must contain). --budget leaves one step per stage (five
# for the LeNet ones).
CASES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # Frankle & Carbin 2019: LeNet-300-100 on MNIST, Adam 1.2e-3, batch 60, 50k iterations
    "lottery_ticket": ("mnist", ("--levels", "1", "--budget", "1e-4"),
                       ("adam lr 0.0012, batch 60, 50000 iterations",)),
    # Zhou et al. 2019: the same LeNet recipe, iterative pruning
    "lottery_ablation": ("mnist", ("--levels", "1", "--criteria", "large_final", "--ablations",
                                   "rewind,signed_constant", "--mask0", "zero",
                                   "--budget", "1e-4"),
                         ("adam lr 0.0012, batch 60, 50000 iterations", "iterative")),
    # Liu et al. 2017: VGG-19, SGD 0.1, momentum 0.9, wd 1e-4, batch 64, 160 epochs, ÷10 at 50%
    # and 75%, λ = 1e-4, 70% of the channels
    "network_slimming": ("cifar10", ("--lams", "1e-4", "--ratios", "0.7", "--budget", "1e-4"),
                         ("sgd lr 0.1, momentum 0.9, weight decay 0.0001, batch 64, 160 epochs, "
                          "step schedule (lr ×0.1 at epochs 80, 120), crop+flip augmentation",)),
    # Liu et al. 2019: VGG-16, the same CIFAR recipe (batch 64); L1 fine-tunes 40 epochs at 1e-3
    "rethinking_pruning": ("cifar10", ("--l1-ratios", "0.5", "--slimming-ratios", "0.4",
                                       "--unstructured-ratios", "0.5", "--budget", "1e-4"),
                           ("sgd lr 0.1, momentum 0.9, weight decay 0.0001, batch 64, 160 epochs, "
                            "step schedule (lr ×0.1 at epochs 80, 120), crop+flip augmentation",
                            "sgd lr 0.001, momentum 0.9, weight decay 0.0001, batch 64, 40 epochs")),
    # Li et al. 2017: VGG-16, SGD 0.1, wd 5e-4, batch 128, 160 epochs; fine-tuned 40 at 1e-3
    "filter_importance": ("cifar10", ("--criteria", "l1", "--ratios", "0.5", "--budget", "1e-4"),
                          ("sgd lr 0.1, momentum 0.9, weight decay 0.0005, batch 128, 160 epochs, "
                           "step schedule (lr ×0.1 at epochs 80, 120), crop+flip augmentation",
                           "sgd lr 0.001, momentum 0.9, weight decay 0.0005, batch 128, 40 epochs")),
    # RepDistiller (Tian et al. 2020) on CIFAR-100: resnet56 -> resnet20, SGD 0.05, wd 5e-4,
    # batch 64, 240 epochs, ÷10 at 150, 180, 210
    "logit_kd": ("cifar100", ("--methods", "kd", "--budget", "1e-4"),
                 ("resnet56 -> resnet20", "sgd lr 0.05, momentum 0.9, weight decay 0.0005, batch 64, "
                  "240 epochs, step schedule (lr ×0.1 at epochs 150, 180, 210), crop+flip")),
    "feature_kd": ("cifar100", ("--methods", "fitnet_2stage,at", "--budget", "1e-4"),
                   ("resnet56", "resnet20", "sgd lr 0.05, momentum 0.9, weight decay 0.0005, "
                    "batch 64, 240 epochs", "step schedule (lr ×0.1 at epochs 150, 180, 210)")),
    "rkd": ("cifar100", ("--methods", "rkd_d,sp", "--budget", "1e-4"),
            ("resnet56", "resnet20", "sgd lr 0.05, momentum 0.9, weight decay 0.0005, batch 64, "
             "240 epochs", "step schedule (lr ×0.1 at epochs 150, 180, 210)")),
    # Krishnamoorthi 2018 (the whitepaper): MobileNet-v2 and -v1, QAT fine-tuned from the float
    # model; float training RepDistiller's CIFAR recipe (lr 0.01 for MobileNetV2)
    "quantization": ("cifar10", ("--budget", "1e-4"),
                     ("Krishnamoorthi 2018", "mobilenet_v2", "mobilenet:",
                      "sgd lr 0.01, momentum 0.9, weight decay 0.0005, batch 64, 240 epochs",
                      "sgd lr 0.05, momentum 0.9, weight decay 0.0005, batch 64, 240 epochs",
                      "step schedule (lr ×0.1 at epochs 150, 180, 210)")),
    # the lecture's "mix it": ResNet-101 -> MobileNet (KD) -> filter pruning -> PTQ / QAT / int8
    "compression_pipeline": ("cifar10", ("--budget", "1e-4"),
                             ("Teacher: resnet101, sgd lr 0.1, momentum 0.9, weight decay 0.0005, "
                              "batch 128, 60 epochs, cosine schedule, crop+flip augmentation",
                              "sgd lr 0.05, momentum 0.9, weight decay 0.0005, batch 128, 60 epochs")),
}


def has_claims(name: str) -> bool:
    return (ROOT / "experiments" / name / "claims.py").exists()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One runs / results / wandb folder for the module: the three distillation experiments
    share their paper teacher (resnet56 on CIFAR-100), trained by the first, as on a real
    checkout; each experiment's results are its own folder."""
    return tmp_path_factory.mktemp("paper")


# pytest's 10 minutes per test are too few for the pipeline on 2 shared cores: its ResNet-101
# teacher (42.5M parameters) alone trains at ~3 images/s there; quantization's two MobileNets
# (82 trials) took 392 s alone under the CPU lock, more on a shared machine
TIMEOUT_S = {"compression_pipeline": 1500, "quantization": 1200}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.timeout(TIMEOUT_S[n]))
                                  if n in TIMEOUT_S else n for n in CASES])
def test_paper_preset_runs_end_to_end(name, synthetic_data_dir, base, monkeypatch):
    dataset, flags, recipe = CASES[name]
    monkeypatch.setenv("DATA_DIR", str(synthetic_data_dir))
    proc = run_experiment(name, "--scale", "paper", *SIZE, *flags, base=base, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = base / "results" / name / "paper"

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) and trials.test_acc.notna().any(), trials
    if name == "compression_pipeline":  # every stage ran: DepGraph's prune, int8 not skipped
        from experiments.compression_pipeline.config import STAGES
        assert set(trials.method) == set(STAGES), sorted(set(trials.method))

    table = (out / "table.md").read_text()
    command = f"python -m experiments.{name} --scale paper {' '.join(SIZE + flags)}"
    assert f"`{command}`" in table and "Machine:" in table, table[-1500:]
    assert f"on {dataset}" in table or dataset in table.split("\n", 1)[0], table[:300]
    for phrase in recipe:
        assert phrase in table, f"{phrase!r} not in table.md:\n{table[:3000]}"
    assert "cut to" in table and "(--budget)" in table  # the cut is said, beside the recipe

    pngs = sorted(out.glob("*.png"))
    assert pngs, "no plot"
    for png in pngs:
        assert png.stat().st_size > 10_000, png
    if has_claims(name):
        claims = (out / "claims.md").read_text()
        assert "paper" in claims and len(pd.read_csv(out / "claims.csv")), claims

    run = json.loads((out / "run.json").read_text())
    assert run["scale"] == "paper" and run["trials_trained"] >= 1, run
    assert run["invocations"][0]["command"] == command, run

    runs = [r for r in offline_runs(base) if r["run"].run_group == name]  # its trials' runs
    assert runs and {r["config"]["setup.dataset"] for r in runs} == {dataset}
    reports = [r for r in offline_runs(base, reports=True)
               if r["run"].job_type == "report" and r["run"].run_group == name]
    assert len(reports) == 1
