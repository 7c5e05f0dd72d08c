"""feature_kd: layer pairing, the hooks' losses, and a smoke run (columns, invariants, bad input)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cli import assert_rejected, run_experiment
from experiments.feature_kd.config import METHODS
from experiments.feature_kd.hooks import LabelWeight, OnlineTeacher
from experiments.feature_kd.layers import hint_pair, modules_up_to, stage_pairs
from lib import models
from lib.distill import KD, AttentionTransfer, FitNet

SHAPE = (1, 28, 28)


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


def test_online_teacher_adds_feature_and_kd_terms_without_teacher_gradients():
    torch.manual_seed(0)
    student, teacher = models.build("vgg_tiny", SHAPE, 10), models.build("resnet8", SHAPE, 10).eval()
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 10, (6,))
    fitnet = FitNet(16, 32)
    hook = OnlineTeacher(student, teacher, loss=fitnet, weight=100.0, student_layers=["features.6"],
                         teacher_layers=["layer2"], kd=KD(4.0), kd_weight=0.9)
    assert list(hook.parameters()) == list(fitnet.parameters())
    logits = student(x)
    extra = hook.extra_loss(x, y, logits)
    with torch.no_grad():
        t_logits = teacher(x)
        t_feat = teacher.layer2(teacher.layer1(F.relu(teacher.bn1(teacher.conv1(x)))))
    s_feat = student.features[:7](x)
    expected = 100 * fitnet(s_feat, t_feat) + 0.9 * KD(4.0)(logits, t_logits)
    torch.testing.assert_close(extra, expected)
    extra.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert fitnet.regressor.weight.grad is not None and fitnet.regressor.weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad.abs().sum() > 0  # the KD term reaches the logits
    assert hook.metrics(student, None)["feature_loss"] == pytest.approx(fitnet(s_feat, t_feat).item())
    hook.remove()

    at = OnlineTeacher(student, teacher, loss=AttentionTransfer(), weight=1000.0,
                       student_layers=["features.2", "features.6"], teacher_layers=["layer1", "layer2"])
    assert at.extra_loss(x, y, student(x)).item() > 0
    with pytest.raises(ValueError, match="^layers: "):
        OnlineTeacher(student, teacher, loss=AttentionTransfer(), student_layers=["features.2"],
                      teacher_layers=[])


def test_label_weight_scales_and_cancels_cross_entropy():
    logits = torch.randn(5, 4, requires_grad=True)
    y = torch.randint(0, 4, (5,))
    ce = F.cross_entropy(logits, y)
    torch.testing.assert_close(ce + LabelWeight(0.1).extra_loss(None, y, logits), 0.1 * ce)
    total = F.cross_entropy(logits, y) + LabelWeight(0.0).extra_loss(None, y, logits)
    total.backward()
    assert total.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("feature_kd")
    run_experiment("feature_kd", "--scale", "smoke", base=base)
    out = base / "results" / "feature_kd" / "smoke"
    return base, out, pd.read_csv(out / "trials.csv")


def test_columns_methods_and_seeds(smoke):
    _, out, trials = smoke
    assert {"method", "teacher", "student", "seed", "test_acc", "val_acc", "at_gap",
            "early_stop_iter", "student_layers", "teacher_layers"} <= set(trials.columns)
    assert set(trials.method) == {"teacher", *METHODS}
    students = trials[trials.method != "teacher"]
    assert (students.groupby("seed").method.nunique() == len(METHODS)).all()
    assert set(students.seed) == {0, 1} and len(students) == 2 * len(METHODS)
    assert (trials.teacher == "resnet8").all() and (trials.student == "vgg_tiny").all()
    assert trials.test_acc.between(0, 1).all()
    assert trials[trials.method == "teacher"].test_acc.item() > 0.2  # well above chance
    table = (out / "table.md").read_text()
    assert "| method | recipe | test acc % | Δ vs student" in table
    assert "| teacher |" in table and "| student | CE |" in table
    assert "Selection rule" in table and "Machine:" in table
    for png in ("accuracy.png", "attention_gap.png"):
        assert (out / png).stat().st_size > 10_000


def test_recipes_are_what_the_methods_say(smoke):
    _, _, trials = smoke
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


def test_attention_transfer_pulls_maps_towards_the_teacher(smoke):
    _, _, trials = smoke
    gap = trials.pivot(index="seed", columns="method", values="at_gap").dropna()
    assert (gap["at"] < 0.7 * gap["student"]).all(), gap
    assert (gap["at+kd"] < 0.7 * gap["kd"]).all(), gap


def test_stage_one_trains_only_the_lower_layers(smoke):
    base, _, _ = smoke
    hints = [d for d in (base / "runs" / "smoke" / "feature_kd").iterdir()
             if json.loads((d / "config.json").read_text())["stage"] == "hint"]
    assert len(hints) == 2  # one per seed, shared by both two-stage methods
    for d in hints:
        seed = json.loads((d / "config.json").read_text())["seed"]
        torch.manual_seed(seed)
        init = models.build("vgg_tiny", SHAPE, 10).state_dict()
        hinted = torch.load(d / "final.pt", weights_only=True)
        assert torch.equal(hinted["classifier.weight"], init["classifier.weight"])
        assert torch.equal(hinted["features.8.weight"], init["features.8.weight"])  # conv 3
        assert not torch.equal(hinted["features.4.weight"], init["features.4.weight"])  # conv 2


@pytest.mark.parametrize("args, msg", [
    (("--methods", "at,nope"), "methods: unknown 'nope', choose from student, kd"),
    (("--model", "lenet_300_100"), "layers: student and teacher share no feature-map size"),
    (("--model", "nope"), "model: unknown 'nope'"),
    (("--scale", "x"), "scale: unknown 'x'")])
def test_bad_input_fails_in_one_line(tmp_path, args, msg):
    assert_rejected("feature_kd", args, msg, tmp_path)


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    _, out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))
    nb = execute("feature_kd", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "teacher test accuracy" in text and "attention gap" in text
