"""logit_kd: the DML module and its per-peer selection, chains keyed by their parents, the
committed default hashes, smoke run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli import ROOT, assert_report, assert_reused, run_experiment, smoke_fixture
from conftest import tiny_splits
from experiments.common import SMOKE_DATA
from experiments.claims import NOT, PARTLY, REPRODUCED, UNTESTED, VERDICTS
from experiments.claims import evaluate as evaluate_claims
from experiments.logit_kd import claims
from experiments.logit_kd.__main__ import EXPERIMENT
from experiments.logit_kd.claims import CLAIMS
from experiments.logit_kd.config import METHODS, Trial, for_scale
from experiments.logit_kd.dml import Peers, PeerTracker, mutual_criterion
from experiments.logit_kd.trials import Ensemble
from lib import data as datasets
from lib.distill import TermMeans
from lib import models
from lib.runs import config_hash
from lib.train import TrainConfig, evaluate, train

COLUMNS = ["method", "teacher", "student", "seed", "test_acc", "generation", "val_acc", "peer", "train_acc"]


# ---- units ------------------------------------------------------------------------------------

def test_mutual_criterion_gives_each_peer_its_own_dml_gradient():
    torch.manual_seed(0)
    peers = Peers([nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(6, 4)]).train()
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    logits = peers(x)
    mutual_criterion(peers)(x, y, logits).backward()
    for k, net in enumerate(peers.peers):
        own = net(x)
        others = [p(x).detach() for j, p in enumerate(peers.peers) if j != k]
        kl = sum(F.kl_div(F.log_softmax(own, 1), F.log_softmax(o, 1), reduction="batchmean",
                          log_target=True) for o in others) / len(others)
        g = torch.autograd.grad(F.cross_entropy(own, y) + kl, net.weight)[0]
        torch.testing.assert_close(net.weight.grad, g)
    peers.eval()
    assert torch.equal(peers(x), peers.peers[0](x))  # evaluation sees peer 0


def test_mutual_criterion_logs_the_peers_mimicry_kl():
    """loss_dml is the batch mean of Σ_k mean_{l≠k} KL(p_l ‖ p_k), by hand; the loss minus it
    is the peers' summed CE; the log starts afresh after each evaluation."""
    torch.manual_seed(0)
    peers = Peers([nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(6, 4)]).train()
    log = TermMeans(["dml"])
    criterion, want, losses = mutual_criterion(peers, log), [], []
    for _ in range(2):
        x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
        losses.append(criterion(x, y, peers(x)).item())
        p = [F.softmax(o, 1) for o in peers.logits]
        kl = sum(sum((p[j] * (p[j].log() - p[k].log())).sum(1).mean() for j in range(3) if j != k) / 2
                 for k in range(3))
        want.append(kl.item())
        ce = sum(F.cross_entropy(o, y) for o in peers.logits).item()
        assert losses[-1] - want[-1] == pytest.approx(ce, rel=1e-5)
    assert log.metrics(peers, None) == {"loss_dml": pytest.approx(sum(want) / 2, rel=1e-5)}
    assert log.metrics(peers, None) == {}


def test_ensemble_of_one_is_the_model_and_averages_probabilities():
    torch.manual_seed(0)
    a, b, x = nn.Linear(4, 3), nn.Linear(4, 3), torch.randn(6, 4)
    torch.testing.assert_close(Ensemble([a])(x), F.log_softmax(a(x), 1))
    mean = (F.softmax(a(x), 1) + F.softmax(b(x), 1)) / 2
    torch.testing.assert_close(Ensemble([a, b])(x).exp(), mean)


def test_each_dml_peer_keeps_its_own_selected_weights():
    """Peer 0 is the loop's model (its selection and kept weights); peer 1's tracker applies the
    same rule to its own columns, and its kept weights reproduce its selected evaluation."""
    data = tiny_splits(n_train=400, n_test=100, val=100)
    shape, k = data.input_shape, data.num_classes
    nets = []
    for seed in (0, 1000):
        torch.manual_seed(seed)
        nets.append(models.build("vgg_tiny", shape, k))
    peers = Peers(nets)
    tracker = PeerTracker(peers.peers[1], 1, "val_loss")
    cfg = TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, batch_size=32, iterations=40,
                      eval_every=5)
    res = train(peers, data, cfg, seed=0, hooks=[tracker], criterion=mutual_criterion(peers),
                keep_best=True)
    curve = pd.DataFrame(res.history)
    assert {"peer1_val_loss", "peer1_test_acc"} <= set(curve.columns)
    assert "peer0_val_loss" not in curve  # peer 0 is the loop's own columns

    peer0 = models.build("vgg_tiny", shape, k)
    peer0.load_state_dict({n[len("peers.0."):]: v for n, v in res.best_state.items()
                           if n.startswith("peers.0.")})
    assert evaluate(peer0, data.val_x, data.val_y)[0] == pytest.approx(res.early_stop["val_loss"])
    assert evaluate(peer0, data.test_x, data.test_y)[1] == res.summary()["test_acc"]

    best = curve.loc[curve.peer1_val_loss.idxmin()]
    assert tracker.summary() == {"peer1_test_acc": best.peer1_test_acc,
                                 "peer1_val_acc": best.peer1_val_acc,
                                 "peer1_final_test_acc": curve.peer1_test_acc.iloc[-1],
                                 "peer1_step": best.step,
                                 "peer1_selected_last": best.step == curve.step.iloc[-1]}
    peer1 = models.build("vgg_tiny", shape, k)
    peer1.load_state_dict(tracker.result.best_state)
    assert evaluate(peer1, data.val_x, data.val_y)[0] == pytest.approx(best.peer1_val_loss)
    assert not torch.equal(peer1.classifier.weight, peer0.classifier.weight)


def test_paper_scale_configs():
    cfg = for_scale("paper", "resnet20").validate()
    assert (cfg.teacher.model, cfg.setup.model, cfg.setup.dataset) == ("resnet56", "resnet20", "cifar100")
    assert "ta" in cfg.methods and cfg.ta_student == "resnet8" and cfg.setup.train.augment
    assert "ta" not in for_scale("paper", "resnet8").validate().methods  # nothing smaller
    default = for_scale("default").validate()
    assert set(default.methods) == set(METHODS)
    assert (default.assistant, default.ta_student) == ("", "mlp_16")


def test_committed_default_hashes():
    """Every committed default trial keeps its run folder: the teacher's spec and each student's
    Trial, rebuilt from the default preset (through the command line's configure) and its
    chain, hash to the row's `run` (student, kd, dml, ban, ensemble, lr, TA assistant and
    student alike)."""
    cfg = EXPERIMENT.parse(["--scale", "default", "--device", "cpu"])[0]
    rows = pd.read_csv(ROOT / "results" / "logit_kd" / "default" / "trials.csv")
    teach = rows[rows.method == "teacher"].run.item()
    assert config_hash(cfg.teacher) == teach
    s, soft = cfg.setup, dict(T=cfg.T, alpha=cfg.alpha)
    small = cfg.ta_student
    for seed, seed_rows in rows[rows.method != "teacher"].groupby("seed"):
        run = {(r.method, r.student, r.generation): r.run for r in seed_rows.itertuples()}
        m, student, kd = s.model, run["student", s.model, 0], run["kd", s.model, 1]
        expected = {("student", m, 0): Trial(s, seed),
                    ("kd", m, 1): Trial(s, seed, "kd", generation=1, parent=teach, **soft),
                    ("dml", m, 0): Trial(s, seed, "dml", peers=cfg.dml_peers),
                    ("ban", m, 1): Trial(s, seed, "ban", generation=1, parent=student, **soft),
                    ("ban", m, 2): Trial(s, seed, "ban", generation=2, parent=run["ban", m, 1],
                                         **soft),
                    ("ban_ensemble", m, 2): Trial(s, seed, "ban_ensemble", generation=2,
                                                  parent=run["ban", m, 2]),
                    ("student", small, 0): Trial(s, seed, model=small),
                    ("kd", small, 1): Trial(s, seed, "kd", model=small, generation=1,
                                            parent=teach, **soft),
                    ("ta_kd", small, 2): Trial(s, seed, "ta_kd", model=small, generation=2,
                                               parent=kd, **soft)}
        prev = student  # label refinery: as many generations as the stop rule ran
        for g in sorted(seed_rows[seed_rows.method == "lr"].generation):
            expected["lr", m, g] = Trial(s, seed, "lr", generation=g, parent=prev, T=1.0, alpha=1.0)
            prev = run["lr", m, g]
        assert set(expected) == set(run)
        for key, trial in expected.items():
            assert config_hash(trial) == run[key], (seed, key)


# ---- claims, on hand-made trials tables ------------------------------------------------------

ALONE = [0.880, 0.885, 0.890]  # the student alone, seeds 0, 1, 2


def claims_table(rows: dict, ta: bool = True) -> pd.DataFrame:
    """A trials table: {(method, student, generation): accuracies of seeds 0..n−1 (or
    (accuracies, improved flags) for lr)} plus the teacher and both students alone."""
    base = {("student", "lenet_300_100", 0): ALONE}
    if ta:
        base[("student", "mlp_16", 0)] = [0.850, 0.852, 0.854]
    out = [{"method": "teacher", "student": "resnet8", "generation": 0, "seed": 0, "peer": 0,
            "test_acc": 0.924, "improved": None}]
    for (method, student, gen), accs in {**base, **rows}.items():
        accs, improved = accs if isinstance(accs, tuple) else (accs, [None] * len(accs))
        for seed, (acc, imp) in enumerate(zip(accs, improved)):
            if acc is not None:
                out.append({"method": method, "student": student, "generation": gen, "seed": seed,
                            "peer": 0, "test_acc": acc, "improved": imp})
    return pd.DataFrame(out)


def plus(points: list[float], base=ALONE) -> list[float]:
    return [a + p / 100 for a, p in zip(base, points)]


def verdict(claim_id: str, trials: pd.DataFrame) -> str:
    return {c.id: c for c in CLAIMS}[claim_id].check(trials).verdict


def test_claim_kd_beats_alone():
    assert verdict("kd_beats_alone", claims_table({("kd", "lenet_300_100", 1): plus([0.5, 0.6, 0.4])})) == REPRODUCED
    # mean +0.2 but se 0.33 (diffs +0.8, −0.4, +0.2): no
    assert verdict("kd_beats_alone", claims_table({("kd", "lenet_300_100", 1): plus([0.8, -0.4, 0.2])})) == NOT
    assert verdict("kd_beats_alone", claims_table({})) == UNTESTED
    # the TA student's kd rows are not the main student's
    assert verdict("kd_beats_alone", claims_table({("kd", "mlp_16", 1): [0.86] * 3,
                                                   ("ta_kd", "mlp_16", 2): [0.86] * 3})) == UNTESTED


def test_claim_dml_averages_the_peers_of_a_seed():
    peers = pd.concat([claims_table({("dml", "lenet_300_100", 0): plus([0.6, 0.5, 0.7])}),
                       claims_table({("dml", "lenet_300_100", 0): plus([-0.2, -0.1, -0.3])}, ta=False)
                       .query("method == 'dml'").assign(peer=1)])
    assert verdict("dml_peers_beat_alone", peers) == REPRODUCED  # +0.2 mean per seed, se 0
    bad = peers.assign(test_acc=lambda d: d.test_acc.where(d.peer == 0, d.test_acc - 0.01))
    assert verdict("dml_peers_beat_alone", bad) == NOT


def test_claim_ban_generations_and_ensemble():
    g1, g2 = plus([0.5, 0.4, 0.6]), plus([0.3, 0.2, 0.4])
    t = claims_table({("ban", "lenet_300_100", 1): g1, ("ban", "lenet_300_100", 2): g2,
                      ("ban_ensemble", "lenet_300_100", 2): plus([0.7, 0.6, 0.8])})
    assert verdict("ban_beats_previous_generation", t) == PARTLY  # gen 1 > 0, gen 2 < gen 1
    assert verdict("ban_ensemble_beats_members", t) == REPRODUCED
    parts = claims.ban_generations(t)
    assert [p.label for p in parts] == ["BAN gen 1 vs gen 0", "BAN gen 2 vs gen 1"]
    assert parts[1].diff == pytest.approx(-0.2) and parts[1].paired
    t2 = claims_table({("ban", "lenet_300_100", 1): g1, ("ban", "lenet_300_100", 2): plus([0.7, 0.6, 0.8]),
                       ("ban_ensemble", "lenet_300_100", 2): plus([0.6, 0.5, 0.7])})
    assert verdict("ban_beats_previous_generation", t2) == REPRODUCED
    assert verdict("ban_ensemble_beats_members", t2) == PARTLY  # above gen 1, below gen 2
    assert verdict("ban_ensemble_beats_members", claims_table({})) == UNTESTED


def test_claim_label_refinery_and_its_stop_rule():
    # seeds 0 and 1 improve at generation 1 (val) and stop at 2; seed 2 stops at 1
    t = claims_table({("lr", "lenet_300_100", 1): (plus([0.4, 0.5, -0.3]), [True, True, False]),
                      ("lr", "lenet_300_100", 2): ([0.8850, 0.8890, None], [False, False, None])})
    parts = claims.lr_refines(t)
    assert [p.n_a for p in parts] == [3, 2]  # generation 2 ran on seeds 0 and 1 only
    assert parts[1].diff == pytest.approx(100 * ((0.885 + 0.889) - (0.884 + 0.890)) / 2)
    assert verdict("label_refinery_refines", t) == NOT  # gen 1: +0.2 ± 0.25 se; gen 2 below
    kept = claims.refinery_kept(t)
    assert list(kept.generation) == [1, 1, 0]
    assert list(kept.test_acc) == pytest.approx([0.884, 0.890, 0.890])
    assert verdict("label_refinery_stop_rule", t) == REPRODUCED  # kept ≥ generation 0
    worse = claims_table({("lr", "lenet_300_100", 1): (plus([-1.0, -1.2, -0.9]), [True, True, True])})
    assert verdict("label_refinery_stop_rule", worse) == NOT
    assert verdict("label_refinery_refines", worse) == NOT
    up = claims_table({("lr", "lenet_300_100", 1): (plus([0.5, 0.6, 0.4]), [True, True, True])})
    assert verdict("label_refinery_refines", up) == REPRODUCED
    assert verdict("label_refinery_stop_rule", claims_table({})) == UNTESTED


def test_claim_ta_beats_direct_kd():
    direct = [0.860, 0.862, 0.864]
    t = claims_table({("kd", "mlp_16", 1): direct,
                      ("ta_kd", "mlp_16", 2): plus([0.3, 0.4, 0.5], direct)})
    v = {c.id: c for c in CLAIMS}["ta_beats_direct_kd"].check(t)
    assert v.verdict == REPRODUCED and "gap 7.20 points" in v.evidence
    t = claims_table({("kd", "mlp_16", 1): direct,
                      ("ta_kd", "mlp_16", 2): plus([-0.3, -0.4, -0.5], direct)})
    assert verdict("ta_beats_direct_kd", t) == NOT
    assert verdict("ta_beats_direct_kd", claims_table({}, ta=False)) == UNTESTED


def test_every_claim_is_judged_on_the_committed_default_trials():
    t = pd.read_csv(ROOT / "results" / "logit_kd" / "default" / "trials.csv")
    table = evaluate_claims(CLAIMS, t)
    assert len(table) == len(CLAIMS) and set(table.verdict) <= set(VERDICTS)
    assert (ROOT / "results" / "logit_kd" / "default" / "claims.md").exists()


# ---- smoke run --------------------------------------------------------------------------------

smoke = smoke_fixture("logit_kd")


def run_dir(base, run_hash: str):
    return base / "runs" / "smoke" / "logit_kd" / run_hash


def run_config(base, run_hash: str) -> dict:
    return json.loads((run_dir(base, run_hash) / "config.json").read_text())


@pytest.mark.smoke
def test_columns_methods_and_table(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.method) == {"teacher", "student", "kd", "dml", "ban", "ban_ensemble", "lr", "ta_kd"}
    untrained = trials.method == "ban_ensemble"  # evaluated only: no learning curve
    assert trials.selected_last.notna().equals(~untrained)
    students = trials[trials.method != "teacher"]
    assert set(students.seed) == {0, 1} and len(trials[trials.method == "teacher"]) == 1
    # 30 steps on 2,000 images: the student alone is far above chance (0.1)
    assert trials[trials.method == "student"].test_acc.min() > 0.3
    for seed, t in students.groupby("seed"):
        assert sorted(t[t.method == "ban"].generation) == [1, 2]
        assert sorted(t[t.method == "dml"].peer) == [0, 1]
        assert t[t.method == "ta_kd"].set_index("generation").student.to_dict() == {2: "mlp_16"}
        assert set(t[t.method.isin(["student", "kd"])].student) == {"lenet_300_100", "mlp_16"}
    trained = len(set(trials.run))  # every trial of the table, the shared teacher included
    table = assert_report(out, "logit_kd", trained,
                          "accuracy_per_method.png", "accuracy_per_generation.png")
    assert ("| method | teacher | student | generation | test acc % | train acc % "
            "| Δ vs alone (pts) | w·term / CE, start → end | n |") in table
    assert "| teacher |  | resnet8 | 0 |" in table and "| student |  | lenet_300_100 | 0 |" in table
    assert "lowest validation loss" in table


@pytest.mark.smoke
def test_loss_ratios_are_logged_where_there_is_a_label_term(smoke):
    """kd, ban, ta_kd and both DML peers carry α·KD / CE (DML: mimicry KL / CE) at the start
    and the end of training, recomputed here from the run's metrics.csv; Label Refinery (no
    label term), the student alone and the ensemble carry none."""
    base, out, trials = smoke
    cols = ["ratio_kd_start", "ratio_kd_end"]
    kd = trials[trials.method.isin(["kd", "ban", "ta_kd"])]
    dml = trials[trials.method == "dml"][["ratio_dml_start", "ratio_dml_end"]]
    for values in (kd[cols], dml):
        assert len(values) and np.isfinite(values.to_numpy(float)).all() and (values > 0).all().all()
    assert trials.loc[~trials.method.isin(["kd", "ban", "ta_kd"]), cols].isna().all().all()
    assert trials.loc[trials.method != "dml", ["ratio_dml_start", "ratio_dml_end"]].isna().all().all()
    assert not any(c.startswith("ratio_soft_ce") for c in trials)  # lr: undefined, never written
    r = kd.iloc[0]
    curve = pd.read_csv(run_dir(base, r.run) / "metrics.csv").query("step > 0")
    first, last = curve.iloc[0], curve.iloc[-1]
    for row, col in ((first, "ratio_kd_start"), (last, "ratio_kd_end")):
        weighted = r.alpha * row.loss_kd
        assert r[col] == pytest.approx(weighted / ((row.train_loss - weighted) / (1 - r.alpha)))
    assert first.step < last.step
    p0 = trials[(trials.method == "dml") & (trials.peer == 0)].iloc[0]
    curve = pd.read_csv(run_dir(base, p0.run) / "metrics.csv").query("step > 0")
    last = curve.iloc[-1]
    assert p0.ratio_dml_end == pytest.approx(last.loss_dml / (last.train_loss - last.loss_dml))
    lines = (out / "table.md").read_text().splitlines()
    main = kd[(kd.method == "kd") & (kd.student == "lenet_300_100")]
    kd_row = next(x for x in lines if x.startswith("| kd | resnet8 | lenet_300_100 |"))
    assert f"| {main.ratio_kd_start.mean():.2f} → {main.ratio_kd_end.mean():.2f} |" in kd_row
    lr_row = next(x for x in lines if x.startswith("| lr |"))
    assert " → " not in lr_row


@pytest.mark.smoke
def test_label_refinery_follows_its_stop_rule(smoke):
    _, _, trials = smoke
    for seed, lr in trials[trials.method == "lr"].groupby("seed"):
        lr = lr.sort_values("generation")
        assert list(lr.generation) == list(range(1, len(lr) + 1))
        prev = trials[(trials.method == "student") & (trials.seed == seed)
                      & (trials.student == lr.student.iloc[0])].val_acc.item()
        for _, r in lr.iterrows():
            assert bool(r.improved) == (r.val_acc > prev)
            prev = r.val_acc
        assert lr.improved.iloc[:-1].astype(bool).all()  # stopped at the first non-improvement
        if len(lr) < 2:
            assert not bool(lr.improved.iloc[-1])


@pytest.mark.smoke
def test_chains_are_keyed_by_their_parents(smoke):
    base, _, trials = smoke
    for seed, t in trials[trials.method != "teacher"].groupby("seed"):
        by = {(r.method, r.student, r.generation): r.run for r in t[t.peer == 0].itertuples()}
        m, small = "lenet_300_100", "mlp_16"
        assert run_config(base, by["ban", m, 1])["parent"] == by["student", m, 0]
        assert run_config(base, by["ban", m, 2])["parent"] == by["ban", m, 1]
        assert run_config(base, by["ban_ensemble", m, 2])["parent"] == by["ban", m, 2]
        assert run_config(base, by["lr", m, 1])["parent"] == by["student", m, 0]
        # TA-KD: the assistant is the kd arm's trial; the small student's direct KD shares its teacher
        assert run_config(base, by["ta_kd", small, 2])["parent"] == by["kd", m, 1]
        assert run_config(base, by["kd", small, 1])["parent"] == run_config(base, by["kd", m, 1])["parent"]
    assert trials[trials.peer == 0].run.is_unique  # the DML peers share one run


@pytest.mark.smoke
def test_reported_accuracy_is_the_saved_selected_weights(smoke):
    base, _, trials = smoke
    data = datasets.load("fashion_mnist", **SMOKE_DATA)

    def check(r, weights: str, val_loss: str, test_acc: str) -> None:
        metrics = pd.read_csv(run_dir(base, r.run) / "metrics.csv")
        best = metrics.loc[metrics[val_loss].idxmin()]
        assert (r.test_acc, r.early_stop_iter) == (best[test_acc], best.step)
        net = models.build(r.student, data.input_shape, data.num_classes)
        net.load_state_dict(torch.load(run_dir(base, r.run) / weights, weights_only=True))
        # trained channels_last, evaluated here NCHW: at most a tie flipped
        assert evaluate(net, data.test_x, data.test_y)[1] == pytest.approx(r.test_acc, abs=2e-3)

    for r in trials[(trials.seed == 0) & trials.method.isin(["student", "ban", "ta_kd"])].itertuples():
        check(r, "best.pt", "val_loss", "test_acc")
    for r in trials[trials.method == "dml"].itertuples():  # peer 0 is the loop's own columns
        prefix = f"peer{r.peer}_" if r.peer else ""
        check(r, f"best_peer{r.peer}.pt", f"{prefix}val_loss", f"{prefix}test_acc")


@pytest.mark.smoke
def test_train_acc_is_the_selected_weights_on_the_training_set(smoke):
    """`train_acc` (how much of its training set a network fits, what a chain hands down) is
    the saved selected weights' accuracy on the training set, recomputed here sample by sample;
    the table's column is its mean per row; the ensemble and the DML peers carry none."""
    base, out, trials = smoke
    data = datasets.load("fashion_mnist", **SMOKE_DATA)
    for r in trials[(trials.seed == 1) & trials.method.isin(["student", "kd", "ban", "lr"])].itertuples():
        net = models.build(r.student, data.input_shape, data.num_classes).eval()
        net.load_state_dict(torch.load(run_dir(base, r.run) / "best.pt", weights_only=True))
        with torch.no_grad():
            hits = sum(int(net(x[None]).argmax() == y) for x, y in zip(data.train_x, data.train_y))
        assert r.train_acc == pytest.approx(hits / len(data.train_y), abs=1e-6)
    assert trials.loc[trials.method.isin(["ban_ensemble", "dml"]), "train_acc"].isna().all()
    assert 0.1 < trials.loc[trials.method == "teacher", "train_acc"].item() <= 1.0
    student = trials[(trials.method == "student") & (trials.student == "lenet_300_100")]
    row = next(x for x in (out / "table.md").read_text().splitlines()
               if x.startswith("| student |  | lenet_300_100 |"))
    assert f"| {100 * student.train_acc.mean():.2f} |" in row


@pytest.mark.smoke
def test_select_final_reports_and_hands_down_the_final_weights(smoke, tmp_path):
    """With `select=final` every trained trial reports the accuracy of its last evaluation and
    saves those weights (best.pt) for the next generation; the trials are new ones (select is
    part of the setup's hash) and the shared teacher is reused."""
    base, _, default = smoke
    out = tmp_path / "final"
    run_experiment("logit_kd", "--scale", "smoke", "--methods", "ban,lr", "--set", "select=final",
                   "--out", str(out), base=base)
    trials = pd.read_csv(out / "trials.csv")
    assert "the test accuracy of the final weights" in (out / "table.md").read_text()
    assert trials[trials.method == "teacher"].run.item() in set(default.run)
    data = datasets.load("fashion_mnist", **SMOKE_DATA)
    for r in trials[trials.method.isin(["student", "ban", "lr"])].itertuples():
        assert r.run not in set(default.run)
        last = pd.read_csv(run_dir(base, r.run) / "metrics.csv").iloc[-1]
        assert (r.test_acc, r.val_acc) == (last.test_acc, last.val_acc)
        net = models.build(r.student, data.input_shape, data.num_classes)
        net.load_state_dict(torch.load(run_dir(base, r.run) / "best.pt", weights_only=True))
        assert evaluate(net, data.test_x, data.test_y)[1] == pytest.approx(r.test_acc, abs=1e-9)
    by = {(r.method, r.generation, r.seed): r.run for r in trials.itertuples()}
    assert run_config(base, by["ban", 1, 0])["parent"] == by["student", 0, 0]


@pytest.mark.smoke
def test_rerun_reuses_every_trial(smoke):
    base, out, trials = smoke
    table = (out / "table.md").read_text()
    assert_reused("logit_kd", base)
    pd.testing.assert_series_equal(pd.read_csv(out / "trials.csv").test_acc, trials.test_acc)
    assert (out / "table.md").read_text() == table  # the footer still names the training run


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("logit_kd", smoke.out, monkeypatch)
    assert "teacher test accuracy" in text and "points vs student alone" in text
    assert "DML peer 0" in text
