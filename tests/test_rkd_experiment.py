"""The rkd experiment: structure metrics, the distillation hook, and a smoke run end to end."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cli import ROOT, assert_report, assert_reused, smoke_fixture
from conftest import tiny_splits
from experiments.rkd.claims import CLAIMS
from experiments.rkd.config import DEFAULT_METHODS
from experiments.rkd.layers import embedding_layer, last_conv_layer
from experiments.rkd.structure import (knn_overlap, recall_at_1, spearman, structure_metrics)
from lib import models
from lib.distill import (KD, Distill, RKDDistance, SimilarityPreserving, Term, teacher_outputs,
                         weighted_ce)
from lib.train import TrainConfig, evaluate, train

STRUCTURE = ["dist_spearman", "dist_pearson", "angle_pearson", "rkd_d_loss", "rkd_a_loss",
             "knn_overlap", "recall_at_1"]


# ----------------------------------------------------------------------------- structure metrics

def test_structure_of_a_space_against_itself_scaled_and_shifted():
    torch.manual_seed(0)
    e = torch.randn(64, 8)
    y = torch.randint(0, 3, (64,))
    m = structure_metrics(3.0 * e + 1.5, e, y, angle_size=20, k=5, batch=32)
    for key in ("dist_spearman", "dist_pearson", "angle_pearson", "knn_overlap"):
        assert m[key] == pytest.approx(1.0, abs=1e-9), key
    assert m["rkd_d_loss"] == pytest.approx(0.0, abs=1e-12)
    assert m["rkd_a_loss"] == pytest.approx(0.0, abs=1e-12)


def test_structure_of_unrelated_spaces_is_low():
    torch.manual_seed(0)
    a, b = torch.randn(200, 16), torch.randn(200, 16)
    m = structure_metrics(a, b, torch.zeros(200, dtype=torch.long), angle_size=30, k=10, batch=50)
    assert abs(m["dist_spearman"]) < 0.1 and abs(m["angle_pearson"]) < 0.1
    assert m["knn_overlap"] < 0.15 and m["rkd_d_loss"] > 0.01
    assert m["recall_at_1"] == 1.0  # one label only


def test_spearman_is_rank_based_and_knn_recall_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x.pow(3)) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    # points on a line: 0, 1, 10, 11 -> nearest neighbours 1, 0, 3, 2
    e = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    assert recall_at_1(e, torch.tensor([0, 0, 1, 1])) == 1.0
    assert recall_at_1(e, torch.tensor([0, 1, 0, 1])) == 0.0
    flipped = torch.tensor([[0.0], [1.0], [11.0], [10.0]])
    assert knn_overlap(e, flipped, 1) == 1.0
    assert knn_overlap(e, torch.tensor([[0.0], [10.0], [1.0], [11.0]]), 1) == 0.0


# ----------------------------------------------------------------------------- the hook

def test_layers_found_for_vgg_and_resnet_and_rejected_for_an_mlp():
    vgg = models.build("vgg_tiny", (1, 28, 28), 10)
    assert (embedding_layer(vgg), last_conv_layer(vgg)) == ("flatten", "features.10")
    res = models.build("resnet8", (1, 28, 28), 10)
    assert (embedding_layer(res), last_conv_layer(res)) == ("pool", "layer3")
    with pytest.raises(ValueError, match="no global pool"):
        embedding_layer(models.build("lenet_300_100", (1, 28, 28), 10))


def _pair():
    torch.manual_seed(0)
    student = models.build("vgg_tiny", (1, 28, 28), 3)
    teacher = models.build("resnet8", (1, 28, 28), 3).eval()
    return student, teacher


def test_cached_teacher_tables_give_the_online_loss():
    student, teacher = _pair()
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 3, (300,))
    terms = [Term("rkd_distance", RKDDistance(), 25.0, "flatten", "pool"),
             Term("kd", KD(4.0), 0.9, "logits", "logits")]
    tables = teacher_outputs(teacher, x, ["pool"], chunk=128)
    cached, online = Distill(student, teacher, terms, tables), Distill(student, teacher, terms)
    assert not cached.online and online.online
    index = torch.tensor([5, 17, 250, 3, 99, 42])
    logits = student(x[index])
    for hook in (cached, online):
        hook.on_batch(index)
    a = cached.extra_loss(x[index], y[index], logits)
    b = online.extra_loss(x[index], y[index], logits)
    assert a.item() > 0 and a.item() == pytest.approx(b.item(), rel=1e-4)
    # a term whose teacher input is not in the tables (SP's conv maps) makes the hook go online
    sp = Term("sp", SimilarityPreserving(), 3000.0, "features.10", "layer3")
    assert Distill(student, teacher, [sp], tables).online


def test_weighted_label_term_gives_hintons_mix():
    student, teacher = _pair()
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 3, (16,))
    hook = Distill(student, teacher, [Term("kd", KD(4.0), 0.9, "logits", "logits")])
    logits = student(x)
    total = weighted_ce(0.1)(x, y, logits) + hook.extra_loss(x, y, logits)  # what the loop adds up
    with torch.no_grad():
        expected = 0.9 * KD(4.0)(logits, teacher(x)) + 0.1 * F.cross_entropy(logits, y)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher never learns


def test_kept_best_weights_are_the_early_stopping_point():
    """What the experiment relies on to measure structure at the selected weights."""
    data = tiny_splits(n_train=256, n_test=64, val=64)
    torch.manual_seed(0)
    model = models.build("vgg_tiny", data.input_shape, data.num_classes)
    cfg = TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, batch_size=32, iterations=24,
                      eval_every=4)
    res = train(model, data, cfg, seed=0, keep_best=True)
    assert 0 < res.early_stop["step"] < 24  # neither the init nor the last weights
    model.load_state_dict(res.best_state)
    assert evaluate(model, data.test_x, data.test_y)[1] == res.early_stop["test_acc"]


# ----------------------------------------------------------------------------- claims

def _trials(acc: dict[str, list[float]], spearman: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """A hand-made trials table: per method, test accuracy in points per seed (5 seeds), and
    distance / angle correlations (the same values for both)."""
    corr = spearman or {}
    return pd.DataFrame([{"method": m, "seed": i, "test_acc": v / 100,
                          "dist_spearman": corr.get(m, [0.8] * 5)[i],
                          "angle_pearson": corr.get(m, [0.7] * 5)[i]}
                         for m, values in acc.items() for i, v in enumerate(values)])


def test_claims_on_hand_made_trials():
    """Every claim's check on tables whose answer is known: reproduced, partly, not, untested."""
    check = {c.id: c.check for c in CLAIMS}
    alone = [85.0, 85.5, 86.0, 85.2, 85.8]
    kd = [a + d for a, d in zip(alone, [0.5, 0.6, 0.4, 0.5, 0.5])]  # +0.5 ± 0.07: a real gain
    same = [a + d for a, d in zip(alone, [0.1, -0.1, 0.0, 0.1, -0.1])]  # Δ 0: no loss
    worse = [a - d for a, d in zip(alone, [1.0, 1.2, 0.9, 1.1, 1.0])]  # −1 point: a loss
    t = _trials({"student": alone, "kd": kd, "rkd_da": same, "rkd_da+kd": kd, "sp": worse,
                 "sp+kd": [k - 1 for k in kd]},
                spearman={"rkd_da": [0.9, 0.91, 0.9, 0.92, 0.9], "rkd_da+kd": [0.81, 0.8, 0.79, 0.8, 0.8],
                          "kd": [0.85, 0.85, 0.86, 0.84, 0.85]})
    keeps = check["rkd_keeps_structure"](t)  # above the student alone, not above KD
    assert keeps.verdict == "partly" and [p.counts for p in keeps.parts] == [True, True, False, False]
    assert check["rkd_at_least_student"](t).verdict == "reproduced"
    assert check["rkd_kd_at_least_kd"](t).verdict == "reproduced"
    assert check["sp_at_least_student"](t).verdict == "not reproduced"
    assert check["sp_kd_at_least_kd"](t).verdict == "not reproduced"
    kd_vs = check["kd_beats_relational"](t)  # KD beats SP, and RKD (Δ +0.5, se 0.05)
    assert kd_vs.verdict == "reproduced"
    assert check["rkd_both_beat_either"](t).verdict == "not tested at this scale"
    both = pd.concat([t, _trials({"rkd_d": worse, "rkd_a": same})])
    assert check["rkd_both_beat_either"](both).verdict == "partly"  # beats distance, not angle
    assert check["rkd_at_least_student"](both).verdict == "partly"  # rkd_d loses a point
    assert check["sp_at_least_student"](t[t.method != "sp"]).verdict == "not tested at this scale"


# ----------------------------------------------------------------------------- smoke run

smoke = smoke_fixture("rkd")


@pytest.mark.smoke
def test_columns_methods_and_ranges(smoke):
    _, out, trials = smoke
    assert {"method", "teacher", "student", "seed", "test_acc", *STRUCTURE} <= set(trials.columns)
    assert set(trials.method) == {"teacher", *DEFAULT_METHODS}
    students = trials[trials.method != "teacher"]
    assert (students.groupby("seed").method.apply(set) == set(DEFAULT_METHODS)).all()
    assert set(students.seed) == {0, 1}
    assert (students.teacher == "resnet8").all() and (students.student == "vgg_tiny").all()
    # the shared smoke teacher (40 steps) is far above chance (0.1), the 20-step students above
    assert trials[trials.method == "teacher"].test_acc.item() > 0.5
    assert students.test_acc.mean() > 0.15
    assert students[["dist_spearman", "angle_pearson"]].abs().le(1).all().all()
    assert students.knn_overlap.between(0, 1).all() and (students.rkd_d_loss > 0).all()
    t = trials[trials.method == "teacher"].iloc[0]
    assert t.dist_spearman == pytest.approx(1) and t.rkd_d_loss == pytest.approx(0)
    # the teacher's logits, embeddings and conv maps are cached: no method runs it online
    assert not students.teacher_online.astype(bool).any()
    # the balance of each weighted term against the CE at the start and the end of training
    t = students.set_index("method")
    assert t.loc["rkd_da", ["ratio_rkd_distance_start", "ratio_rkd_angle_end"]].gt(0).all().all()
    assert t.loc["sp", ["ratio_sp_start", "ratio_sp_end"]].gt(0).all().all()
    # the student alone trains packed, its seeds as one stacked model
    assert (t.loc["student"].pack_size == 2).all() and t.drop("student").pack_size.isna().all()
    # 6 students + teacher
    table = assert_report(out, "rkd", 7, "accuracy.png", "structure.png", "distances.png")
    assert "| teacher | labels (shared teacher) |" in table and "| student | CE |" in table
    assert "highest validation accuracy" in table and "over 6 students and the shared teacher" in table
    assert "2·se of Δ (points)" in table and "selected at last eval" in table
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.id) == [c.id for c in CLAIMS]
    untested = {"rkd_kd_at_least_kd", "sp_kd_at_least_kd", "rkd_both_beat_either",
                "kd_beats_relational"}  # opt-in arms
    assert (claims.verdict == "not tested at this scale").tolist() == [c.id in untested for c in CLAIMS]
    balance = (out / "balance.md").read_text()
    assert "| rkd_angle | " in balance and "| sp | " in balance and "CE = 2.3" in balance


@pytest.mark.smoke
def test_rkd_students_keep_more_of_the_teachers_distances(smoke):
    _, _, trials = smoke
    # a 20-step smoke student can select its untrained init (step 0) on validation loss
    trained = trials[trials.early_stop_iter > 0]
    by = trained.groupby("method")[["dist_spearman", "rkd_d_loss"]].mean()
    assert by.dist_spearman["rkd_da"] > by.dist_spearman["student"]
    assert by.rkd_d_loss["rkd_da"] < by.rkd_d_loss["student"]


@pytest.mark.smoke
def test_reported_accuracy_is_the_selected_weights(smoke):
    base, _, trials = smoke
    from experiments.common import SMOKE_DATA
    from lib.data import load

    data = load("fashion_mnist", **SMOKE_DATA)
    for _, row in trials[trials.method.isin(["rkd_da", "sp"]) & (trials.seed == 1)].iterrows():
        run = base / "runs" / "smoke" / "rkd" / row.run
        curve = pd.read_csv(run / "metrics.csv")
        best = curve.loc[curve.val_acc.idxmax()]  # the first best validation accuracy
        assert best.step == row.early_stop_iter and best.test_acc == row.test_acc
        model = models.build("vgg_tiny", data.input_shape, data.num_classes)
        model.load_state_dict(torch.load(run / "selected.pt", weights_only=True))
        model.to(memory_format=torch.channels_last)  # as trained and evaluated
        assert evaluate(model, data.test_x, data.test_y)[1] == row.test_acc


@pytest.mark.smoke
def test_rerun_reuses_every_student_and_the_teacher(smoke):
    base, out, trials = smoke
    table = (out / "table.md").read_text()
    assert_reused("rkd", base)
    assert pd.read_csv(out / "trials.csv").equals(trials)
    assert (out / "table.md").read_text() == table  # the footer still names the training run


def test_committed_default_hashes():
    """Every committed default student keeps its run folder (its Trial, rebuilt from the default
    preset as the command line makes it, hashes to the row's `run`), and the teacher is the
    shared default one."""
    from experiments.rkd.__main__ import EXPERIMENT
    from experiments.rkd.config import Trial, for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    assert EXPERIMENT.parse(["--scale", "default"])[0] == cfg
    path = ROOT / "results" / "rkd" / "default" / "trials.csv"
    if not path.exists():  # README: the default has not been rerun with issue #12's recipe
        pytest.skip("no committed default results for this recipe (not rerun yet)")
    rows = pd.read_csv(path)
    students = rows[rows.method != "teacher"]
    assert set(students.method) == set(DEFAULT_METHODS) and len(students) == 5 * len(DEFAULT_METHODS)
    for r in students.itertuples():
        assert config_hash(Trial(cfg.setup, int(r.seed), r.method)) == r.run, r
    assert config_hash(cfg.setup.teacher) == "f11e746d548e"


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("rkd", smoke.out, monkeypatch)
    assert "teacher test accuracy" in text and "distance Spearman vs student alone" in text
