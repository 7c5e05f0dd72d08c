"""logit_kd: the DML module, best-weight selection, chains keyed by their parents, smoke run."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli import assert_rejected, run_experiment
from conftest import tiny_splits
from experiments.logit_kd.config import METHODS, for_scale
from experiments.logit_kd.dml import Peers, mutual_criterion
from experiments.logit_kd.select import BestWeights
from experiments.logit_kd.trials import AsCriterion, Ensemble, label_term
from lib import data as datasets
from lib import models
from lib.train import TrainConfig, evaluate, train

COLUMNS = ["method", "teacher", "student", "seed", "test_acc", "generation", "val_acc", "peer"]


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


def test_as_criterion_replaces_the_loops_cross_entropy():
    logits, y = torch.randn(5, 3, requires_grad=True), torch.randint(0, 3, (5,))
    hook = AsCriterion(label_term(0.25))
    loop_loss = F.cross_entropy(logits, y) + hook.extra_loss(None, y, logits)
    torch.testing.assert_close(loop_loss, 0.25 * F.cross_entropy(logits, y))
    zero = AsCriterion(label_term(0.0))
    (F.cross_entropy(logits, y) + zero.extra_loss(None, y, logits)).backward()
    assert logits.grad.abs().max() < 1e-6  # Label Refinery: no label gradient left


def test_ensemble_of_one_is_the_model_and_averages_probabilities():
    torch.manual_seed(0)
    a, b, x = nn.Linear(4, 3), nn.Linear(4, 3), torch.randn(6, 4)
    torch.testing.assert_close(Ensemble([a])(x), F.log_softmax(a(x), 1))
    mean = (F.softmax(a(x), 1) + F.softmax(b(x), 1)) / 2
    torch.testing.assert_close(Ensemble([a, b])(x).exp(), mean)


def test_best_weights_keeps_the_loops_selected_evaluation():
    data = tiny_splits(n_train=400, n_test=100, val=100)
    torch.manual_seed(0)
    model = models.build("vgg_tiny", data.input_shape, data.num_classes)
    best = BestWeights(model)
    cfg = TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, batch_size=32, iterations=40,
                      eval_every=5)
    res = train(model, data, cfg, seed=0, hooks=[best])
    assert best.best["step"] == res.early_stop["step"]
    model.load_state_dict(best.state)
    val_loss, _ = evaluate(model, data.val_x, data.val_y)
    assert val_loss == pytest.approx(res.early_stop["val_loss"], rel=1e-5)
    test_acc = evaluate(model, data.test_x, data.test_y)[1]
    assert test_acc == res.summary()["test_acc"]


def test_paper_scale_configs():
    cfg = for_scale("paper", "resnet20").validate()
    assert (cfg.teacher.model, cfg.setup.model, cfg.setup.dataset) == ("resnet56", "resnet20", "cifar100")
    assert "ta" not in cfg.methods and cfg.setup.train.augment
    ta = for_scale("paper", "resnet8").validate()
    assert ta.assistant == "resnet20" and "ta" in ta.methods
    assert set(for_scale("default").validate().methods) == set(METHODS)


# ---- smoke run --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("logit_kd")
    run_experiment("logit_kd", "--scale", "smoke", base=base)
    out = base / "results" / "logit_kd" / "smoke"
    return base, out, pd.read_csv(out / "trials.csv")


def run_config(base, run_hash: str) -> dict:
    return json.loads((base / "runs" / "smoke" / "logit_kd" / run_hash / "config.json").read_text())


def test_columns_methods_and_table(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.method) == {"teacher", "student", "kd", "dml", "ban", "ban_ensemble", "lr", "ta_kd"}
    assert trials.test_acc.between(0, 1).all()
    students = trials[trials.method != "teacher"]
    assert set(students.seed) == {0, 1} and len(trials[trials.method == "teacher"]) == 1
    for seed, t in students.groupby("seed"):
        assert sorted(t[t.method == "ban"].generation) == [1, 2]
        assert sorted(t[t.method == "dml"].peer) == [0, 1]
        assert t[t.method == "ta_kd"].set_index("generation").student.to_dict() == {1: "vgg_narrow", 2: "vgg_tiny"}
    table = (out / "table.md").read_text()
    assert "| method | teacher | student | generation | test acc % | Δ vs alone (pts) | n |" in table
    assert "| teacher |  | resnet8 | 0 |" in table and "| student |  | vgg_tiny | 0 |" in table
    assert "lowest validation loss" in table and "Machine:" in table
    for png in ("accuracy_per_method.png", "accuracy_per_generation.png"):
        assert (out / png).stat().st_size > 10_000


def test_label_refinery_follows_its_stop_rule(smoke):
    _, _, trials = smoke
    for seed, lr in trials[trials.method == "lr"].groupby("seed"):
        lr = lr.sort_values("generation")
        assert list(lr.generation) == list(range(1, len(lr) + 1))
        prev = trials[(trials.method == "student") & (trials.seed == seed)].val_acc.item()
        for _, r in lr.iterrows():
            assert bool(r.improved) == (r.val_acc > prev)
            prev = r.val_acc
        assert lr.improved.iloc[:-1].astype(bool).all()  # stopped at the first non-improvement
        if len(lr) < 2:
            assert not bool(lr.improved.iloc[-1])


def test_chains_are_keyed_by_their_parents(smoke):
    base, _, trials = smoke
    for seed, t in trials[trials.method != "teacher"].groupby("seed"):
        by = {(r.method, r.generation): r.run for r in t[t.peer == 0].itertuples()}
        assert run_config(base, by["ban", 1])["parent"] == by["student", 0]
        assert run_config(base, by["ban", 2])["parent"] == by["ban", 1]
        assert run_config(base, by["ban_ensemble", 2])["parent"] == by["ban", 2]
        assert run_config(base, by["lr", 1])["parent"] == by["student", 0]
        assert run_config(base, by["ta_kd", 2])["parent"] == by["ta_kd", 1]
        assert run_config(base, by["kd", 1])["parent"] == run_config(base, by["ta_kd", 1])["parent"]
    assert trials[trials.peer == 0].run.is_unique  # the DML peers share one run


def test_reported_accuracy_is_the_saved_selected_weights(smoke):
    base, _, trials = smoke
    data = datasets.load("fashion_mnist", val_size=500, train_limit=2000, test_limit=1000)
    for r in trials[(trials.seed == 0) & trials.method.isin(["student", "ban", "ta_kd"])].itertuples():
        run = base / "runs" / "smoke" / "logit_kd" / r.run
        metrics = pd.read_csv(run / "metrics.csv")
        assert r.test_acc == metrics.loc[metrics.val_loss.idxmin(), "test_acc"]
        net = models.build(r.student, data.input_shape, data.num_classes)
        net.load_state_dict(torch.load(run / "best.pt", weights_only=True))
        # trained channels_last, evaluated here NCHW: at most a tie flipped
        assert evaluate(net, data.test_x, data.test_y)[1] == pytest.approx(r.test_acc, abs=2e-3)
    dml = trials[(trials.method == "dml")]
    for r in dml.itertuples():
        m = pd.read_csv(base / "runs" / "smoke" / "logit_kd" / r.run / "metrics.csv")
        assert r.test_acc == m.loc[m[f"peer{r.peer}_val_loss"].idxmin(), f"peer{r.peer}_test_acc"]


def test_rerun_reuses_every_trial(smoke):
    base, out, trials = smoke
    runs = base / "runs" / "smoke" / "logit_kd"
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/done")}
    run_experiment("logit_kd", "--scale", "smoke", base=base)
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/done")} == stamps
    again = pd.read_csv(out / "trials.csv")
    pd.testing.assert_series_equal(again.test_acc, trials.test_acc)


@pytest.mark.parametrize("args, msg", [
    (("--methods", "kd,nope"), "methods: unknown 'nope', choose from kd, dml, ban, lr, ta"),
    (("--model", "nope"), "model: unknown 'nope'"),
    (("--assistant", "nope"), "model: unknown 'nope'"),
    (("--scale", "paper", "--methods", "ta"), "assistant: none set"),
])
def test_bad_input_fails_in_one_line(tmp_path, args, msg):
    assert_rejected("logit_kd", args, msg, tmp_path)


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    _, out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))
    nb = execute("logit_kd", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "teacher test accuracy" in text and "points vs student alone" in text
    assert "DML peer 0" in text
