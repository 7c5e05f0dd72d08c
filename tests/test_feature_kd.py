"""feature_kd: layer pairing, each method's loss terms, committed hashes, and a smoke run
(columns, invariants, reuse); bad input in test_bad_input.py."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cli import ROOT, assert_report, assert_reused, smoke_fixture
from experiments.feature_kd.__main__ import EXPERIMENT, Shared, train_kw
from experiments.feature_kd.config import METHODS, for_scale, make_trial
from experiments.feature_kd.layers import hint_pair, modules_up_to, stage_outputs, stage_pairs
from lib import models
from lib.distill import KD, AttentionTransfer, teacher_outputs
from lib.runs import config_hash

SHAPE = (1, 28, 28)
CPU = torch.device("cpu")


def test_stage_pairs_match_spatial_sizes():
    student, teacher = models.build("vgg_tiny", SHAPE, 10), models.build("resnet8", SHAPE, 10)
    pairs = stage_pairs(student, teacher, SHAPE)
    assert pairs == [("features.2", "layer1"), ("features.6", "layer2"), ("features.10", "layer3")]
    assert hint_pair(pairs) == ("features.6", "layer2")
    assert modules_up_to(student, "features.6", SHAPE) == {f"features.{i}" for i in range(7)}
    cifar = (3, 32, 32)
    assert stage_pairs(models.build("resnet20", cifar, 100), models.build("resnet56", cifar, 100),
                       cifar) == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    with pytest.raises(ValueError, match="^layers: student and teacher share no feature-map size"):
        stage_pairs(models.build("lenet_300_100", SHAPE, 10), teacher, SHAPE)


def test_each_method_trains_on_its_terms():
    """fitnet+kd: 0.1·CE (the loop's criterion) + 100·hint + 0.9·KD, one online teacher pass for
    both terms; at: 1000·AT over every pair; kd alone: the cached logits table; FitNet's stage 1:
    the hint alone, no label gradient; the student alone: plain CE."""
    torch.manual_seed(0)
    student, teacher = models.build("vgg_tiny", SHAPE, 10), models.build("resnet8", SHAPE, 10).eval()
    pairs = stage_pairs(student, teacher, SHAPE)
    channels = {name: out[0] for net in (student, teacher)
                for name, out in stage_outputs(net, SHAPE).values()}
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 10, (6,))
    tables = teacher_outputs(teacher, x)  # x plays the training set
    shared = Shared(pairs, channels, teacher, tables, probe=x, probe_teacher=[])
    cfg = for_scale("default")

    kw = train_kw(make_trial(cfg, pairs, "fitnet+kd", 0), shared, CPU)
    [hook] = kw["hooks_for"](student)
    fitnet = hook.terms[0].loss
    assert hook.online and list(hook.parameters()) == list(fitnet.parameters())
    logits = student(x)
    extra = hook.extra_loss(x, y, logits)
    with torch.no_grad():
        t_logits = teacher(x)
        t_feat = teacher.layer2(teacher.layer1(F.relu(teacher.bn1(teacher.conv1(x)))))
    s_feat = student.features[:7](x)
    torch.testing.assert_close(extra, 100 * fitnet(s_feat, t_feat) + 0.9 * KD(4.0)(logits, t_logits))
    torch.testing.assert_close(kw["criterion"](x, y, logits), 0.1 * F.cross_entropy(logits, y))
    extra.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert fitnet.regressor.weight.grad is not None and fitnet.regressor.weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad.abs().sum() > 0  # the KD term reaches the logits
    assert hook.metrics(student, None) == pytest.approx(
        {"loss_fitnet": fitnet(s_feat, t_feat).item(), "loss_kd": KD(4.0)(logits, t_logits).item()})
    hook.remove()

    at = train_kw(make_trial(cfg, pairs, "at", 0), shared, CPU)
    [hook] = at["hooks_for"](student)
    assert at["criterion"] is None and hook.online
    with torch.no_grad():
        extra = hook.extra_loss(x, y, student(x))
        feats = teacher_outputs(teacher, x, [t for _, t in pairs])
    s_maps = list(hook.tap.features[s] for s, _ in pairs)
    expected = 1000 * AttentionTransfer()(s_maps, [feats[t] for _, t in pairs])
    torch.testing.assert_close(extra, expected)
    hook.remove()

    kd = train_kw(make_trial(cfg, pairs, "kd", 0), shared, CPU)
    [hook] = kd["hooks_for"](student)
    assert not hook.online  # no feature term: the teacher's logits come from the table
    hook.on_batch(torch.tensor([4, 1]))
    logits = student(x[[4, 1]])
    torch.testing.assert_close(hook.extra_loss(x[[4, 1]], y[[4, 1]], logits),
                               0.9 * KD(4.0)(logits, tables["logits"][[4, 1]]))

    hint = train_kw(make_trial(cfg, pairs, "fitnet_2stage", 0, stage="hint"), shared, CPU)
    [hook] = hint["hooks_for"](student)
    assert [(t.name, t.weight) for t in hook.terms] == [("fitnet", 1.0)]
    logits = student(x).detach().requires_grad_(True)
    label = hint["criterion"](x, y, logits)
    label.backward()
    assert label.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    hook.remove()
    for plain in (make_trial(cfg, pairs, "student", 0), make_trial(cfg, pairs, "fitnet_2stage", 0)):
        kw = train_kw(plain, shared, CPU)  # the student alone; stage 2 of FitNet without KD
        assert kw["hooks_for"](student) == [] and kw["criterion"] is None


def test_committed_default_hashes():
    """Every committed default student keeps its run folder: its Trial, rebuilt from the
    default preset (through the command line's configure) and the stage pairs, hashes to the
    row's `run`; the teacher row is the shared TeacherSpec's run."""
    cfg = EXPERIMENT.parse(["--scale", "default", "--device", "cpu"])[0]
    pairs = stage_pairs(models.build(cfg.setup.model, SHAPE, 10),
                        models.build(cfg.teacher.model, SHAPE, 10), SHAPE)
    rows = pd.read_csv(ROOT / "results" / "feature_kd" / "default" / "trials.csv")
    assert set(rows.method) == {"teacher", *METHODS}
    assert config_hash(cfg.teacher) == rows[rows.method == "teacher"].run.item()
    for r in rows[rows.method != "teacher"].itertuples():
        assert config_hash(make_trial(cfg, pairs, r.method, int(r.seed))) == r.run, r


# ---- smoke run --------------------------------------------------------------------------------

smoke = smoke_fixture("feature_kd")


def curve(base, experiment: str, run_hash: str) -> pd.DataFrame:
    return pd.read_csv(base / "runs" / "smoke" / experiment / run_hash / "metrics.csv")


@pytest.mark.smoke
def test_columns_methods_and_seeds(smoke):
    base, out, trials = smoke
    assert {"method", "teacher", "student", "seed", "test_acc", "val_acc", "at_gap",
            "early_stop_iter", "student_layers", "teacher_layers"} <= set(trials.columns)
    assert set(trials.method) == {"teacher", *METHODS}
    students = trials[trials.method != "teacher"]
    assert (students.groupby("seed").method.nunique() == len(METHODS)).all()
    assert set(students.seed) == {0, 1} and len(students) == 2 * len(METHODS)
    assert (trials.teacher == "resnet8").all() and (trials.student == "vgg_tiny").all()
    # each student's accuracy is the one at its best validation accuracy (first on ties);
    # the teacher's row is its final weights
    for r in students.itertuples():
        c = curve(base, "feature_kd", r.run)
        best = c.loc[c.val_acc.idxmax()]
        assert (r.test_acc, r.early_stop_iter) == (best.test_acc, best.step)
    t = trials[trials.method == "teacher"].iloc[0]
    assert t.test_acc == curve(base, "teachers", t.run).test_acc.iloc[-1]
    assert t.test_acc > 0.5  # the shared smoke teacher: 40 steps, far above chance (0.1)
    table = assert_report(out, "feature_kd", None, "accuracy.png", "attention_gap.png")
    assert "| method | recipe | test acc % | Δ vs student" in table
    assert "| teacher |" in table and "| student | CE |" in table
    assert "Selection rule" in table


@pytest.mark.smoke
def test_recipes_are_what_the_methods_say(smoke):
    base, _, trials = smoke
    t = trials.set_index(["method", "seed"]).sort_index()
    assert (t.loc["student"].kd_weight == 0).all() and (t.loc["student"].feature_weight == 0).all()
    for m in ("kd", "fitnet+kd", "at+kd", "fitnet_2stage+kd"):
        assert (t.loc[m].kd_weight == 0.9).all() and ((t.loc[m].ce_weight - 0.1).abs() < 1e-9).all()
    assert (t.loc["fitnet"].feature_weight == 100).all() and (t.loc["at"].feature_weight == 1000).all()
    assert (t.loc["fitnet"].student_layers == "features.6").all()
    assert (t.loc["at"].teacher_layers == "layer1,layer2,layer3").all()
    assert t.loc["fitnet_2stage"].hint_loss.notna().all()
    # both two-stage methods start from the same stage 1 (one run per seed, shared)
    assert (t.loc["fitnet_2stage"].hint_loss.values == t.loc["fitnet_2stage+kd"].hint_loss.values).all()
    # each term's mean is logged under its name, and only the trial's own terms are
    logged = {m: set(curve(base, "feature_kd", t.loc[(m, 0)].run).columns) for m in METHODS}
    assert {"loss_fitnet", "loss_kd"} <= logged["fitnet+kd"] and "loss_attention" in logged["at"]
    assert not any(c.startswith("loss_") for c in logged["student"] | logged["fitnet_2stage"])


@pytest.mark.smoke
def test_attention_transfer_pulls_maps_towards_the_teacher(smoke):
    _, _, trials = smoke
    gap = trials.pivot(index="seed", columns="method", values="at_gap").dropna()
    assert (gap["at"] < 0.7 * gap["student"]).all(), gap
    assert (gap["at+kd"] < 0.7 * gap["kd"]).all(), gap


@pytest.mark.smoke
def test_stage_one_trains_only_the_lower_layers(smoke):
    base, _, _ = smoke
    configs = (base / "runs" / "smoke" / "feature_kd").glob("*/config.json")
    hints = [c.parent for c in configs if json.loads(c.read_text())["stage"] == "hint"]
    assert len(hints) == 2  # one per seed, shared by both two-stage methods
    for d in hints:
        seed = json.loads((d / "config.json").read_text())["seed"]
        torch.manual_seed(seed)
        init = models.build("vgg_tiny", SHAPE, 10).state_dict()
        hinted = torch.load(d / "final.pt", weights_only=True)
        assert torch.equal(hinted["classifier.weight"], init["classifier.weight"])
        assert torch.equal(hinted["features.8.weight"], init["features.8.weight"])  # conv 3
        assert not torch.equal(hinted["features.4.weight"], init["features.4.weight"])  # conv 2


@pytest.mark.smoke
def test_rerun_reuses_every_trial(smoke):
    base, out, _ = smoke
    table = (out / "table.md").read_text()
    assert_reused("feature_kd", base)
    assert (out / "table.md").read_text() == table  # the footer still names the training run


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("feature_kd", smoke.out, monkeypatch)
    assert "teacher test accuracy" in text and "attention gap" in text
