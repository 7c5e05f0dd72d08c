"""Distillation losses: hand-computed values, invariances, gradients, and every loss on real models."""
from __future__ import annotations

import functools
import math
from itertools import product

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib import models
from lib.distill import (LOSSES, DML, FSP, KD, AttentionTransfer, FeatureTap, FitNet, RKDAngle,
                         RKDDistance, SimilarityPreserving, SoftCE, attention_map,
                         Distill, Term, cached_logits, check_loss_name, fsp_matrix, kd_criterion,
                         teacher_outputs, weighted_ce)
from lib.distill.teacher import term_ratios, term_values
from lib.train import TrainConfig, train

MODEL_NAMES = ("lenet_300_100", "conv2", "conv4")  # small enough for a seconds-long test
SHAPE = (1, 28, 28)


def logits_pair(b=5, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g, dtype=torch.float64), torch.randn(b, k, generator=g, dtype=torch.float64)


# ---- KD ---------------------------------------------------------------------------------------

def test_kd_zero_for_equal_logits_positive_otherwise():
    s, t = logits_pair()
    assert KD(4.0)(s, s.clone()).abs().item() < 1e-6
    assert KD(4.0)(s, t).item() > 0


def test_kd_gradient_matches_hand_formula():
    s, t = logits_pair()
    s.requires_grad_(True)
    T, B = 3.0, len(s)
    KD(T)(s, t).backward()
    expected = T * (F.softmax(s.detach() / T, 1) - F.softmax(t / T, 1)) / B
    torch.testing.assert_close(s.grad, expected)
    assert torch.autograd.gradcheck(lambda x: KD(T)(x, t), (s.detach().clone().requires_grad_(True),))


def test_kd_hand_computed_2x3():
    s = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    t = [[3.0, 1.0, 0.0], [0.5, -0.5, 1.0]]
    T = 2.0

    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    kl = [sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(tr), softmax(sr))) for sr, tr in zip(s, t)]
    expected = T * T * sum(kl) / 2
    got = KD(T)(torch.tensor(s), torch.tensor(t)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_kd_criterion_mixes_kd_and_ce_and_trains():
    torch.manual_seed(0)
    teacher = models.build("lenet_300_100", SHAPE, 10).eval()
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 10, (6,))
    logits = torch.randn(6, 10)
    crit = kd_criterion(teacher, alpha=0.7, T=2.0)
    expected = 0.7 * KD(2.0)(logits, teacher(x)) + 0.3 * F.cross_entropy(logits, y)
    torch.testing.assert_close(crit(x, y, logits), expected)
    from conftest import tiny_splits
    student = models.build("lenet_300_100", SHAPE, 10)
    cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, iterations=3, eval_every=3)
    result = train(student, tiny_splits(n_train=200, n_test=50, val=50), cfg, seed=0, criterion=crit)
    assert math.isfinite(result.final["train_loss"])
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="^alpha: "):
        kd_criterion(teacher, alpha=1.5)


def test_distill_from_cached_tables_trains_exactly_like_the_online_teacher():
    """Distill with the teacher's logits computed once (a table looked up by batch index) gives
    the same weights as Distill running the teacher on every batch, and as kd_criterion; the
    label term is the loop's criterion, (1 − α)·CE."""
    from conftest import tiny_splits
    data = tiny_splits(n_train=200, n_test=50, val=50)
    torch.manual_seed(1)
    teacher = models.build("lenet_300_100", SHAPE, 10).eval()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=32, iterations=8, eval_every=4)
    torch.manual_seed(2)
    init = models.build("lenet_300_100", SHAPE, 10).state_dict()
    tables = teacher_outputs(teacher, data.train_x, chunk=64)
    assert set(tables) == {"logits"} and tables["logits"].shape == (len(data.train_x), 10)
    assert not tables["logits"].requires_grad
    torch.testing.assert_close(tables["logits"], cached_logits(teacher, data.train_x))

    def fit(distill_tables: dict | None, online: bool | None) -> nn.Module:
        student = models.build("lenet_300_100", SHAPE, 10)
        student.load_state_dict(init)
        if online is None:  # the reference: the teacher inside the criterion
            train(student, data, cfg, seed=0, criterion=kd_criterion(teacher, alpha=0.7, T=2.0))
            return student
        hook = Distill(student, teacher, [Term("kd", KD(2.0), 0.7)], tables=distill_tables)
        assert hook.online == online
        res = train(student, data, cfg, seed=0, hooks=[hook], criterion=weighted_ce(1 - 0.7))
        assert res.final["loss_kd"] > 0  # the term's mean since the last evaluation
        return student

    reference, online, cached = fit(None, None), fit(None, True), fit(tables, False)
    for a, b, c in zip(reference.parameters(), online.parameters(), cached.parameters()):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)
    assert not torch.equal(reference.state_dict()["net.1.weight"], init["net.1.weight"])  # it trained


# ---- DML and Label Refinery -------------------------------------------------------------------

def test_dml_matches_functional():
    s, t = logits_pair(seed=1)
    p_peer = F.softmax(t, 1)
    expected = (p_peer * (p_peer.log() - F.log_softmax(s, 1))).sum(1).mean()
    torch.testing.assert_close(DML()(s, t), expected)
    assert DML()(s, s.clone()).abs().item() < 1e-12


def test_soft_ce_matches_functional():
    s, t = logits_pair(seed=2)
    expected = F.cross_entropy(s, F.softmax(t, 1))  # probability targets
    torch.testing.assert_close(SoftCE()(s, t), expected)
    hand = -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum() / len(s)
    torch.testing.assert_close(SoftCE()(s, t), hand)


def test_teacher_tensors_never_receive_gradients():
    s, t = logits_pair(seed=3)
    fs, ft = torch.randn(4, 8, 6, 6), torch.randn(4, 16, 3, 3)
    cases = [(KD(), s, t), (DML(), s, t), (SoftCE(), s, t), (FitNet(8, 16), fs, ft),
             (AttentionTransfer(), fs, ft), (RKDDistance(), fs, ft), (RKDAngle(), fs, ft),
             (SimilarityPreserving(), fs, ft)]
    for loss, a, b in cases:
        a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        loss(a, b).backward()
        assert b.grad is None, type(loss).__name__
        assert a.grad is not None and a.grad.abs().sum() > 0, type(loss).__name__


# ---- RKD --------------------------------------------------------------------------------------

def test_rkd_invariant_to_scale_and_angle_to_translation():
    g = torch.Generator().manual_seed(4)
    es, et = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 9, generator=g, dtype=torch.float64)
    shift_s, shift_t = torch.randn(5, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    for loss in (RKDDistance(), RKDAngle()):
        base = loss(es, et)
        assert base.item() > 0
        torch.testing.assert_close(loss(3.7 * es, 3.7 * et), base)
        torch.testing.assert_close(loss(0.2 * es, 5.0 * et), base)
    torch.testing.assert_close(RKDAngle()(es + shift_s, et + shift_t), RKDAngle()(es, et))
    assert RKDDistance()(es, 2 * es).item() < 1e-12 and RKDAngle()(es, 2 * es + 1).item() < 1e-12


def test_rkd_angle_is_cosine_at_the_middle_point():
    from lib.distill.rkd import triplet_angles
    e = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    a = triplet_angles(e)
    assert a.shape == (4, 4, 4)
    assert a[0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)  # right angle at the origin
    assert a[0, 1, 3].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)  # 45 degrees
    assert torch.isfinite(a).all()


# ---- Attention transfer -----------------------------------------------------------------------

def test_attention_maps_unit_norm_and_pooling():
    g = torch.Generator().manual_seed(5)
    fs, ft = torch.randn(3, 8, 8, 8, generator=g), torch.randn(3, 16, 4, 4, generator=g)
    q = attention_map(fs)
    assert q.shape == (3, 64)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(attention_map(fs, reduce="sum"), q)  # equal after normalisation
    manual = F.normalize(fs.pow(2).mean(1).flatten(1), dim=1)
    torch.testing.assert_close(q, manual)
    at = AttentionTransfer()
    pooled = F.adaptive_avg_pool2d(fs, (4, 4))
    expected = (attention_map(pooled) - attention_map(ft)).pow(2).mean()
    torch.testing.assert_close(at(fs, ft), expected)
    torch.testing.assert_close(at(ft, fs), expected)  # the larger side is pooled either way
    torch.testing.assert_close(at([fs, ft], [ft, ft]), expected)  # summed over layer pairs
    with pytest.raises(ValueError, match=r"^attention: needs feature maps \(B, C, H, W\)"):
        at(torch.randn(3, 10), torch.randn(3, 10))
    with pytest.raises(ValueError, match="^reduce: unknown 'max', choose from mean, sum$"):
        AttentionTransfer(reduce="max")


# ---- Similarity preserving --------------------------------------------------------------------

def test_sp_hand_computed():
    fs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ft = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # F·Fᵀ: student [[1,0,1],[0,1,1],[1,1,2]], teacher [[1,1,0],[1,1,0],[0,0,1]]; rows normalised
    r2, r6 = 1 / math.sqrt(2), 1 / math.sqrt(6)
    gs = [[r2, 0, r2], [0, r2, r2], [r6, r6, 2 * r6]]
    gt = [[r2, r2, 0], [r2, r2, 0], [0, 0, 1]]
    expected = sum((a - b) ** 2 for ra, rb in zip(gs, gt) for a, b in zip(ra, rb)) / 9
    sp = SimilarityPreserving()
    assert sp(fs, ft).item() == pytest.approx(expected, rel=1e-6)
    assert sp([fs, fs], [ft, ft]).item() == pytest.approx(2 * expected, rel=1e-6)
    assert sp(fs, 5 * fs).item() < 1e-12
    with pytest.raises(ValueError, match="^sp: needs as many student as teacher features, got 2 and 1$"):
        sp([fs, fs], [ft])


# ---- FitNet -----------------------------------------------------------------------------------

def test_fitnet_regressor_shapes_and_gradients():
    conv = FitNet(8, 16)
    assert conv.regress(torch.randn(2, 8, 7, 7)).shape == (2, 16, 7, 7)
    linear = FitNet(32, 64)
    assert linear.regress(torch.randn(2, 32)).shape == (2, 64)
    for loss, s, t in ((conv, torch.randn(2, 8, 7, 7), torch.randn(2, 16, 7, 7)),
                       (linear, torch.randn(2, 32), torch.randn(2, 64)),
                       (conv, torch.randn(2, 8, 14, 14), torch.randn(2, 16, 7, 7))):
        loss.zero_grad(set_to_none=True)
        value = loss(s, t)
        value.backward()
        assert value.item() > 0
        assert loss.regressor.weight.grad is not None and loss.regressor.weight.grad.abs().sum() > 0
    x = torch.randn(2, 32)  # the linear path is the 1x1 conv at a single location
    torch.testing.assert_close(linear.regress(x), linear.regressor(x[:, :, None, None]).flatten(1))
    with pytest.raises(ValueError, match=r"^student_feat: expected \(B, 8\)"):
        conv.regress(torch.randn(2, 9, 7, 7))


def test_fitnet_paper_regressor_sized_to_the_teachers_map():
    """The paper's W_r: a valid conv of kernel H_s − H_t + 1 (then BN + ReLU, RepDistiller),
    so a 14×14 guided map lands on a 7×7 hint map with no pooling; 1×1 for equal sizes."""
    from lib.distill.fitnet import conv_regressor_fits
    paper = FitNet(8, 16, "conv", (14, 14), (7, 7))
    conv = paper.regressor[0]
    assert conv.kernel_size == (8, 8) and conv.padding == (0, 0)
    assert [type(m) for m in paper.regressor] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    s, t = torch.randn(4, 8, 14, 14), torch.randn(4, 16, 7, 7)
    assert paper.regress(s).shape == (4, 16, 7, 7) and (paper.regress(s) >= 0).all()
    torch.testing.assert_close(paper(s, t), F.mse_loss(paper.regress(s), t))
    assert FitNet(8, 16, "conv", (7, 7), (7, 7)).regressor[0].kernel_size == (1, 1)
    assert conv_regressor_fits((14, 14), (7, 7)) and not conv_regressor_fits((7, 7), (14, 14))
    with pytest.raises(ValueError, match=r"^regressor: 'conv' needs the student's map at least as large"):
        FitNet(8, 16, "conv", (7, 7), (14, 14))
    with pytest.raises(ValueError, match="^regressor: unknown 'mlp', choose from 1x1, conv$"):
        FitNet(8, 16, "mlp")
    with pytest.raises(ValueError, match=r"^teacher_feat: the conv regressor was sized for maps"):
        paper(s, torch.randn(4, 16, 6, 6))


# ---- FSP --------------------------------------------------------------------------------------

def test_fsp_hand_computed():
    """G = F1·F2ᵀ / (H·W); the loss is ‖G_s − G_t‖² summed over entries, averaged over the batch."""
    f1 = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2): channels [1, 2] and [0, 1]
    f2 = torch.tensor([[[[3.0, 4.0]]]])  # (1, 1, 1, 2): [3, 4]
    g = fsp_matrix(f1, f2)
    torch.testing.assert_close(g, torch.tensor([[[5.5], [2.0]]]))  # (1·3 + 2·4)/2, (0·3 + 1·4)/2
    t1 = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]]])
    t2 = torch.tensor([[[[2.0, 2.0]]]])  # teacher G: [[1], [2]]
    s_batch, t_batch = [torch.cat([f1, f1]), torch.cat([f2, f2])], [torch.cat([t1, t1]), torch.cat([t2, t2])]
    assert FSP()(s_batch, t_batch).item() == pytest.approx(4.5 ** 2)  # (5.5 − 1)² + (2 − 2)²
    assert FSP(reduce="mean")(s_batch, t_batch).item() == pytest.approx(4.5 ** 2 / 2)
    # three layers, two flows: + G(f2, f2) = (3² + 4²)/2 = 12.5 against (2² + 2²)/2 = 4
    assert FSP()([f1, f2, f2], [t1, t2, t2]).item() == pytest.approx(4.5 ** 2 + 8.5 ** 2)
    # a batch averages the per-sample distances: sample 2 matches the teacher exactly
    assert FSP()([torch.cat([f1, t1]), torch.cat([f2, t2])],
                 [torch.cat([t1, t1]), torch.cat([t2, t2])]).item() == pytest.approx(4.5 ** 2 / 2)
    # the larger map is average-pooled to the smaller: a 2×2 map against a 1×1 one
    big, small = torch.arange(4.0).view(1, 1, 2, 2), torch.ones(1, 1, 1, 1)
    torch.testing.assert_close(fsp_matrix(big, small), torch.tensor([[[1.5]]]))


def test_fsp_adapters_gradients_and_errors():
    s = [torch.randn(3, 4, 8, 8, requires_grad=True), torch.randn(3, 8, 4, 4, requires_grad=True)]
    t = [torch.randn(3, 6, 8, 8, requires_grad=True), torch.randn(3, 12, 4, 4, requires_grad=True)]
    loss = FSP([4, 8], [6, 12])
    value = loss(s, t)
    value.backward()
    assert value.item() > 0 and all(x.grad is not None for x in s) and all(x.grad is None for x in t)
    assert all(a.weight.grad.abs().sum() > 0 for a in loss.adapters)
    assert isinstance(FSP([4, 12], [6, 12]).adapters[1], nn.Identity)  # equal widths: no adapter
    with pytest.raises(ValueError, match="^fsp: student and teacher FSP matrices differ in shape"):
        FSP()(s, t)
    with pytest.raises(ValueError, match="^fsp: needs at least 2 layers per side, got 1$"):
        FSP()(s[0], t[0])
    with pytest.raises(ValueError, match=r"^fsp: needs feature maps \(B, C, H, W\)"):
        FSP()([torch.randn(3, 4), torch.randn(3, 4)], [torch.randn(3, 4), torch.randn(3, 4)])
    with pytest.raises(ValueError, match="^reduce: unknown 'max', choose from sum, mean$"):
        FSP(reduce="max")


def test_attention_reads_a_precomputed_teacher_map():
    s, t = torch.randn(3, 8, 7, 7), torch.randn(3, 16, 7, 7)
    at = AttentionTransfer()
    torch.testing.assert_close(at([s, s], [attention_map(t), t]), 2 * at(s, t))
    with pytest.raises(ValueError, match="^attention: the teacher's precomputed map has 49 positions"):
        at(torch.randn(3, 8, 14, 14), attention_map(t))


# ---- term balance -----------------------------------------------------------------------------

def test_term_values_and_ratios_by_hand():
    torch.manual_seed(0)
    student, teacher = models.build("conv2", SHAPE, 10), models.build("conv2", SHAPE, 10).eval()
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    got = term_values(student, teacher, [Term("kd", KD(4.0), 0.5)], x, y)
    with torch.no_grad():
        logits = student(x)
        assert got == pytest.approx({"ce": F.cross_entropy(logits, y).item(),
                                     "kd": KD(4.0)(logits, teacher(x)).item()}, rel=1e-5)
    # train_loss = 0.1·CE + 0.9·kd + 50·at; CE = 2 at the start, 0.5 at the end
    history = [{"step": 0, "train_loss": float("nan")},
               {"step": 5, "train_loss": 0.2 + 0.9 + 1.0, "loss_kd": 1.0, "loss_attention": 0.02},
               {"step": 10, "train_loss": 0.05 + 0.45 + 0.5, "loss_kd": 0.5, "loss_attention": 0.01}]
    ratios = term_ratios(history, {"kd": 0.9, "attention": 50.0}, ce_weight=0.1)
    assert ratios == pytest.approx({"ratio_kd_start": 0.45, "ratio_attention_start": 0.5,
                                    "ratio_kd_end": 0.9, "ratio_attention_end": 1.0})
    assert term_ratios(history, {"kd": 0.9}, ce_weight=0.0) == {}  # no label term: no ratio


# ---- registry and FeatureTap ------------------------------------------------------------------

def test_check_loss_name():
    check_loss_name("kd")
    with pytest.raises(ValueError) as err:
        check_loss_name("nope")
    assert str(err.value) == ("loss: unknown 'nope', choose from kd, dml, soft_ce, fitnet, "
                              "attention, fsp, rkd_distance, rkd_angle, sp")


def test_feature_tap_records_and_rejects_unknown_layers():
    model = models.build("conv2", SHAPE, 10)
    with FeatureTap(model, ["features.1", "classifier.2"]) as tap:
        model(torch.randn(2, *SHAPE))
        assert tap.features["features.1"].shape == (2, 64, 28, 28)
        assert [f.shape for f in tap()] == [(2, 64, 28, 28), (2, 256)]
    tap.features.clear()
    model(torch.randn(2, *SHAPE))
    assert tap.features == {}  # hooks removed on exit
    with pytest.raises(ValueError) as err:
        FeatureTap(model, ["features.99"])
    msg = str(err.value)
    assert msg.startswith("layer: unknown 'features.99' in ConvNet, choose from features, features.0,")
    assert "\n" not in msg


# ---- every loss on real models ----------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def model_and_layers(name: str, role: str) -> tuple[nn.Module, str | None, str]:
    """A model and two of its layers: the last 4-D feature map (or None) and the last hidden vector."""
    torch.manual_seed(MODEL_NAMES.index(name) + 10 * (role == "teacher"))  # self-pairs differ
    model = models.build(name, SHAPE, 10)
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    with FeatureTap(model, leaves) as tap, torch.no_grad():
        out = model(torch.zeros(2, *SHAPE))
    maps = [n for n in leaves if tap.features[n].dim() == 4]
    vectors = [n for n in leaves if tap.features[n].dim() == 2 and tap.features[n] is not out]
    return model, (maps[-1] if maps else None), vectors[-1]


def outputs(name: str, role: str, loss_name: str, other: str, x: torch.Tensor):
    model, fmap, vector = model_and_layers(name, role)
    model.zero_grad(set_to_none=True)
    if LOSSES[loss_name].inputs == "logits":
        return model, model(x)
    both_maps = fmap is not None and model_and_layers(other, role)[1] is not None
    with FeatureTap(model, [fmap if both_maps else vector]) as tap:
        model(x)
    return model, tap()[0]


@pytest.mark.parametrize("loss_name,student_name,teacher_name",
                         list(product(LOSSES, MODEL_NAMES, MODEL_NAMES)))
def test_every_loss_on_every_model_pair(loss_name, student_name, teacher_name):
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(6))
    student, s = outputs(student_name, "student", loss_name, teacher_name, x)
    teacher, t = outputs(teacher_name, "teacher", loss_name, student_name, x)  # with grad on: detaching is the loss's job
    loss = LOSSES[loss_name](s.shape[1], t.shape[1]) if loss_name == "fitnet" else LOSSES[loss_name]()
    if loss_name in ("attention", "fsp") and s.dim() == 2:  # a fully connected net has no map
        with pytest.raises(ValueError, match=rf"^{loss_name}: needs feature maps \(B, C, H, W\)"):
            loss(s, t) if loss_name == "attention" else loss([s, s], [t, t])
        return
    if loss_name == "fsp":  # the flow from a map to itself; adapters where the widths differ
        loss = FSP([s.shape[1]] * 2, [t.shape[1]] * 2)
        s, t = [s, s], [t, t]
    value = loss(s, t)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    first = next(student.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    if loss_name == "fitnet":
        assert loss.regressor.weight.grad is not None
