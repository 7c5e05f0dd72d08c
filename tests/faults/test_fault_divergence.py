"""Divergence is a result: a non-finite loss stops the trial at once (alone or in a pack, where
the others go on untouched), the trial is finished `diverged` at its step, and trials.csv, the
table and the footer say so."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import faultkit
from conftest import tiny_splits
from lib import models
from lib import packed_train as packed_mod
from lib.pack import PackedNet
from lib.packed_train import train_packed
from lib.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, iterations=30, eval_every=10)
NAN_AT = 17


@pytest.fixture(scope="module")
def data():
    return tiny_splits()


def build(seed: int):
    torch.manual_seed(seed)
    return models.build("lenet_300_100", (1, 28, 28), 10)


def test_a_non_finite_loss_stops_the_trial_at_once(data):
    steps = []

    def nan_later(x, y, logits):
        steps.append(len(steps))
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if len(steps) > NAN_AT else loss

    model = build(0)
    res = train(model, data, CFG, seed=0, criterion=nan_later)
    # losses are read at evaluations (no sync per step): it stops at the next one, at step 20
    assert res.diverged_step == NAN_AT and len(steps) == 2 * CFG.eval_every
    assert [r["step"] for r in res.history] == [0, 10]
    summary = res.summary()
    assert summary["diverged"] is True and summary["diverged_step"] == NAN_AT
    assert "diverged" not in train(build(0), data, CFG, seed=0).summary()  # others: no new column


def test_in_a_pack_the_diverged_trial_is_frozen_and_the_others_go_on(data, monkeypatch):
    seeds = [0, 1]
    ref = train_packed(PackedNet([build(s) for s in seeds], data.input_shape), data, CFG, seeds=seeds)

    calls = []

    def cross_entropy(logits, y, reduction="mean"):
        out = F.cross_entropy(logits, y, reduction=reduction)
        if logits.shape[-1] != CFG.batch_size:  # an evaluation, not a training step
            return out
        calls.append(0)
        if len(calls) > NAN_AT:  # trial 1's loss turns NaN at step NAN_AT
            out = out.clone()
            out[1] = float("nan")
        return out

    monkeypatch.setattr(packed_mod, "F", type("F", (), {"cross_entropy": staticmethod(cross_entropy)}))
    net = PackedNet([build(s) for s in seeds], data.input_shape)
    res = train_packed(net, data, CFG, seeds=seeds)
    assert res[1].diverged_step == NAN_AT and res[0].diverged_step is None
    assert [r["step"] for r in res[1].history] == [0, 10]
    assert pd.DataFrame(res[0].history).equals(pd.DataFrame(ref[0].history))  # the other: untouched
    # the diverged trial holds the state it has alone: its last evaluation's before the NaN
    alone = build(1)
    calls.clear()

    def nan_at(x, y, logits):
        calls.append(0)
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) > NAN_AT else loss

    train(alone, data, CFG, seed=1, criterion=nan_at)
    for name, t in alone.state_dict().items():
        torch.testing.assert_close(net.state(1)[name], t, rtol=1e-3, atol=2e-3)  # as test_pack


@pytest.mark.smoke
def test_a_diverged_grid_is_reported_and_goes_on(tmp_path):
    argv = [*faultkit.GRID, "--optimizer", "sgd", "--lr", "1e4", "--iterations", "40"]
    res = faultkit.run(tmp_path, argv)
    assert res.code == 0 and "Traceback" not in res.output, res.output
    out = tmp_path / "results" / "lottery_ticket" / "smoke"
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and trials.diverged.all() and (trials.diverged_step >= 0).all()
    table = (out / "table.md").read_text()
    assert "| diverged |" in table and "| 1 of 1 |" in table
    assert "3 of 3 trials diverged (non-finite loss" in table
