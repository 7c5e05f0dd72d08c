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
from experiments.feature_kd.claims import CLAIMS
from experiments.feature_kd.config import DEFAULT_METHODS, for_scale, make_trial
from experiments.feature_kd.layers import (conv_depth, find_pairs, hint_pair, modules_up_to,
                                           stage_pairs)
from lib import models
from lib.distill import FSP, KD, AttentionTransfer, attention_map, teacher_outputs
from lib.runs import config_hash

SHAPE = (1, 28, 28)
CPU = torch.device("cpu")


def test_stage_pairs_match_spatial_sizes_and_depth():
    student, teacher = models.build("vgg_tiny", SHAPE, 10), models.build("resnet8", SHAPE, 10)
    pairs = stage_pairs(student, teacher, SHAPE)
    assert pairs == [("features.2", "layer1"), ("features.6", "layer2"), ("features.10", "layer3")]
    assert hint_pair(pairs) == ("features.6", "layer2")
    assert modules_up_to(student, "features.6", SHAPE) == {f"features.{i}" for i in range(7)}
    assert [conv_depth(student, s, SHAPE) for s, _ in pairs] == [1, 2, 3]
    assert [conv_depth(teacher, t, SHAPE) for _, t in pairs] == [3, 6, 9]  # shortcut convs count
    # AT skips the stage one conv deep; FSP reads the flows between all stages; the paper's conv
    # regressor fits the equal-size hint pair (a 1x1 conv there)
    found = find_pairs(student, teacher, SHAPE, at_min_depth=2)
    assert found.attention == (("features.6", "layer2"), ("features.10", "layer3"))
    assert found.fsp == tuple(pairs) and found.hint == ("features.6", "layer2")
    assert found.regressor("conv") == "conv" and found.regressor("1x1") == "1x1"
    assert found.shapes["features.6"] == (16, 14, 14) and found.shapes["layer2"] == (32, 14, 14)
    with pytest.raises(ValueError, match="^at_min_depth: no student stage is 9 convs deep"):
        find_pairs(student, teacher, SHAPE, at_min_depth=9)
    cifar = (3, 32, 32)
    assert stage_pairs(models.build("resnet20", cifar, 100), models.build("resnet56", cifar, 100),
                       cifar) == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    with pytest.raises(ValueError, match="^layers: student and teacher share no feature-map size"):
        stage_pairs(models.build("lenet_300_100", SHAPE, 10), teacher, SHAPE)


def _shared(student, teacher, x, cfg):
    pairs = find_pairs(student, teacher, SHAPE, cfg.at_min_depth)
    layers = [t for _, t in pairs.attention]
    feats = teacher_outputs(teacher, x, layers)  # x plays the training set
    tables = {"logits": feats["logits"], **{n: attention_map(feats[n]) for n in layers}}
    return Shared(pairs, teacher, tables, probe=x, probe_teacher=[])


def test_each_method_trains_on_its_terms():
    """fitnet+kd: 0.1·CE (the loop's criterion) + 4·hint (the paper's regressor) + 0.9·KD, one
    online teacher pass for both terms; at: 200·AT over AT's pairs from the cached teacher maps;
    kd alone: the cached logits table; fsp's stage 1: FSP alone over every stage, with width
    adapters, no label gradient; the student alone: plain CE."""
    torch.manual_seed(0)
    student, teacher = models.build("vgg_tiny", SHAPE, 10), models.build("resnet8", SHAPE, 10).eval()
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 10, (6,))
    cfg = for_scale("default")
    shared = _shared(student, teacher, x, cfg)
    pairs = shared.pairs

    kw = train_kw(make_trial(cfg, pairs, "fitnet+kd", 0), shared, CPU)
    [hook] = kw["hooks_for"](student)
    fitnet = hook.terms[0].loss
    assert fitnet.kind == "conv" and hook.online and list(hook.parameters()) == list(fitnet.parameters())
    logits = student(x)
    extra = hook.extra_loss(x, y, logits)
    with torch.no_grad():
        t_logits = teacher(x)
        t_feat = teacher.layer2(teacher.layer1(F.relu(teacher.bn1(teacher.conv1(x)))))
    s_feat = student.features[:7](x)
    torch.testing.assert_close(extra, 4 * fitnet(s_feat, t_feat) + 0.9 * KD(4.0)(logits, t_logits))
    torch.testing.assert_close(kw["criterion"](x, y, logits), 0.1 * F.cross_entropy(logits, y))
    extra.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert fitnet.regressor[0].weight.grad is not None and fitnet.regressor[0].weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad.abs().sum() > 0  # the KD term reaches the logits
    assert hook.metrics(student, None) == pytest.approx(
        {"loss_fitnet": fitnet(s_feat, t_feat).item(), "loss_kd": KD(4.0)(logits, t_logits).item()})
    hook.remove()

    at = train_kw(make_trial(cfg, pairs, "at", 0), shared, CPU)
    [hook] = at["hooks_for"](student)
    assert at["criterion"] is None and not hook.online  # the teacher's maps come from the table
    index = torch.tensor([4, 1, 0])
    hook.on_batch(index)
    with torch.no_grad():
        extra = hook.extra_loss(x[index], y[index], student(x[index]))
        feats = teacher_outputs(teacher, x[index], [t for _, t in pairs.attention])
    s_maps = list(hook.tap.features[s] for s, _ in pairs.attention)
    expected = 200 * AttentionTransfer()(s_maps, [feats[t] for _, t in pairs.attention])
    torch.testing.assert_close(extra, expected)
    hook.remove()

    kd = train_kw(make_trial(cfg, pairs, "kd", 0), shared, CPU)
    [hook] = kd["hooks_for"](student)
    assert not hook.online  # no feature term: the teacher's logits come from the table
    hook.on_batch(torch.tensor([4, 1]))
    logits = student(x[[4, 1]])
    torch.testing.assert_close(hook.extra_loss(x[[4, 1]], y[[4, 1]], logits),
                               0.9 * KD(4.0)(logits, shared.tables["logits"][[4, 1]]))

    hint = train_kw(make_trial(cfg, pairs, "fsp+kd", 0, stage="hint"), shared, CPU)
    [hook] = hint["hooks_for"](student)
    [term] = hook.terms
    assert (term.name, term.weight, term.student) == ("fsp", 1.0, ("features.2", "features.6", "features.10"))
    assert isinstance(term.loss, FSP) and hook.online  # raw stage maps: the teacher runs online
    assert [a.weight.shape[:2] for a in term.loss.adapters] == [(16, 8), (32, 16), (64, 32)]
    logits = student(x).detach().requires_grad_(True)
    label = hint["criterion"](x, y, logits)
    label.backward()
    assert label.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    assert hook.extra_loss(x, y, logits).item() > 0
    hook.remove()
    for plain in (make_trial(cfg, pairs, "student", 0), make_trial(cfg, pairs, "fitnet_2stage", 0),
                  make_trial(cfg, pairs, "fsp", 0)):
        kw = train_kw(plain, shared, CPU)  # the student alone; stage 2 of FitNet / FSP without KD
        assert kw["hooks_for"](student) == [] and kw["criterion"] is None


def _trials(points: dict[str, list[float]], gaps: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """A hand-made trials table: per method, test accuracy in points per seed (and AT gaps)."""
    rows = [{"method": m, "seed": i, "test_acc": v / 100, "at_gap": (gaps or {}).get(m, [0.01] * 9)[i]}
            for m, values in points.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_claims_on_hand_made_trials():
    """Every claim's check on tables whose answer is known: reproduced, partly, not, untested."""
    check = {c.id: c.check for c in CLAIMS}
    alone, kd = [85.0, 86.0, 87.0], [86.0, 87.1, 87.9]  # KD +1.0, +1.1, +0.9: Δ 1.0 > 2·se
    t = _trials({"student": alone, "kd": kd,
                 "fitnet_2stage": [85.1, 85.9, 87.0], "fitnet_2stage+kd": [86.0, 87.0, 88.0],
                 "fitnet": [80.0, 81.2, 81.9], "fitnet+kd": [81.0, 82.0, 83.0],  # −5: a loss
                 "at": [81.0, 81.8, 83.1], "at+kd": [85.9, 87.2, 87.8]},
                gaps={"student": [0.011, 0.012, 0.010], "at": [0.003, 0.002, 0.003],
                      "kd": [0.010, 0.011, 0.010], "at+kd": [0.003, 0.003, 0.002]})
    assert check["kd_beats_student"](t).verdict == "reproduced"
    assert check["kd_beats_student"](_trials({"student": alone, "kd": alone})).verdict == "not reproduced"
    fit = check["fitnet_at_least_student"](t)  # two-stage: no loss; one stage: −5 points
    assert fit.verdict == "partly" and [p.counts for p in fit.parts] == [True, False]
    assert check["fitnet_kd_at_least_kd"](t).verdict == "partly"
    assert check["at_at_least_student"](t).verdict == "not reproduced"
    assert check["at_kd_at_least_kd"](t).verdict == "reproduced"  # Δ ≈ 0: no loss
    assert check["at_moves_attention"](t).verdict == "reproduced"
    for claim in ("fsp_at_least_student", "fsp_kd_at_least_kd"):
        assert check[claim](t).verdict == "not tested at this scale"
    only_two_stage = t[~t.method.isin(["fitnet", "fitnet+kd"])]
    assert check["fitnet_at_least_student"](only_two_stage).verdict == "reproduced"


def test_config_rejects_bad_fields():
    from dataclasses import replace
    cfg = for_scale("smoke")
    for field, value, msg in (("regressor", "mlp", "regressor: must be one of 1x1, conv, got mlp"),
                              ("at_min_depth", 0, "at_min_depth: must be >= 1, got 0"),
                              ("at_weight", 0.0, "at_weight: must be > 0, got 0.0"),
                              ("hint_weight", -1.0, "hint_weight: must be > 0, got -1.0")):
        with pytest.raises(ValueError, match=f"^{msg}$"):
            replace(cfg, **{field: value}).validate()
    # the papers' weights at paper scale, the balanced ones at the default scale
    assert (for_scale("paper").at_weight, for_scale("paper").hint_weight) == (1000.0, 100.0)
    assert for_scale("default").at_weight < 1000 and for_scale("default").hint_weight < 100


def test_committed_default_hashes():
    """Every committed default student keeps its run folder: its Trial, rebuilt from the
    default preset (through the command line's configure) and the stage pairs, hashes to the
    row's `run`; the teacher row is the shared TeacherSpec's run."""
    cfg = EXPERIMENT.parse(["--scale", "default", "--device", "cpu"])[0]
    pairs = find_pairs(models.build(cfg.setup.model, SHAPE, 10),
                       models.build(cfg.teacher.model, SHAPE, 10), SHAPE, cfg.at_min_depth)
    rows = pd.read_csv(ROOT / "results" / "feature_kd" / "default" / "trials.csv")
    assert set(rows.method) == {"teacher", *cfg.methods}  # the default scale's methods
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
    assert set(trials.method) == {"teacher", *DEFAULT_METHODS}
    students = trials[trials.method != "teacher"]
    assert (students.groupby("seed").method.nunique() == len(DEFAULT_METHODS)).all()
    assert set(students.seed) == {0, 1} and len(students) == 2 * len(DEFAULT_METHODS)
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
    for m in ("kd", "at+kd", "fitnet_2stage+kd", "fsp+kd"):
        assert (t.loc[m].kd_weight == 0.9).all() and ((t.loc[m].ce_weight - 0.1).abs() < 1e-9).all()
    assert (t.loc["at"].feature_weight == 200).all()  # the default scale's balanced β
    assert (t.loc["at"].teacher_layers == "layer2,layer3").all()
    assert (t.loc["fitnet_2stage"].student_layers == "features.6").all()
    assert (t.loc["fitnet_2stage"].regressor == "conv").all()
    assert (t.loc["fsp"].teacher_layers == "layer1,layer2,layer3").all()
    for family in ("fitnet_2stage", "fsp"):  # both methods of a family start from one stage 1
        assert t.loc[family].hint_loss.notna().all()
        assert (t.loc[family].hint_loss.values == t.loc[f"{family}+kd"].hint_loss.values).all()
    # each term's mean is logged under its name, and only the trial's own terms are; the
    # balance of each weighted term against the CE at the start and the end of training
    logged = {m: set(curve(base, "feature_kd", t.loc[(m, 0)].run).columns) for m in DEFAULT_METHODS}
    assert {"loss_attention", "loss_kd"} <= logged["at+kd"] and "loss_attention" in logged["at"]
    assert not any(c.startswith("loss_") for c in logged["student"] | logged["fsp"])
    assert t.loc["at"][["ratio_attention_start", "ratio_attention_end"]].gt(0).all().all()
    assert t.loc["at+kd"][["ratio_kd_start", "ratio_kd_end"]].gt(0).all().all()
    assert t.loc["student"].ratio_attention_start.isna().all()


@pytest.mark.smoke
def test_attention_transfer_pulls_maps_towards_the_teacher(smoke):
    _, _, trials = smoke
    gap = trials.pivot(index="seed", columns="method", values="at_gap").dropna()
    assert (gap["at"] < gap["student"]).all(), gap
    assert (gap["at+kd"] < gap["kd"]).all(), gap


@pytest.mark.smoke
def test_stage_one_trains_only_the_lower_layers(smoke):
    base, _, _ = smoke
    configs = [json.loads(c.read_text()) | {"dir": c.parent} for c in
               (base / "runs" / "smoke" / "feature_kd").glob("*/config.json")]
    hints = [c for c in configs if c["stage"] == "hint"]
    # one per seed and family, shared by the family's two methods
    assert sorted((c["method"], c["seed"]) for c in hints) == [
        ("fitnet_2stage", 0), ("fitnet_2stage", 1), ("fsp", 0), ("fsp", 1)]
    for c in hints:
        torch.manual_seed(c["seed"])
        init = models.build("vgg_tiny", SHAPE, 10).state_dict()
        hinted = torch.load(c["dir"] / "final.pt", weights_only=True)
        assert torch.equal(hinted["classifier.weight"], init["classifier.weight"])
        assert not torch.equal(hinted["features.4.weight"], init["features.4.weight"])  # conv 2
        # FitNet's stage 1 stops at the guided layer (conv 2), FSP's at the last stage (conv 3)
        frozen = torch.equal(hinted["features.8.weight"], init["features.8.weight"])
        assert frozen == (c["method"] == "fitnet_2stage")


@pytest.mark.smoke
def test_report_writes_claims_and_the_loss_balance(smoke):
    _, out, trials = smoke
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.id) == [c.id for c in CLAIMS]
    assert claims.verdict.isin(["reproduced", "partly", "not reproduced"]).all()  # all arms ran
    balance = (out / "balance.md").read_text()
    assert "| AT | " in balance and "| FSP (stage 1 only) | " in balance and "CE = 2.3" in balance
    table = (out / "table.md").read_text()
    assert "w·term / CE, start → end" in table and "selected at last eval" in table


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
