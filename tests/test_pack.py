"""Packed trials (lib.pack, lib.packed_train) equal the same trials run alone."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_splits
from lib import models
from lib.pack import PackError, PackedNet, can_pack
from lib.packed_train import train_packed
from lib.prune.mask import Mask
from lib.train import TrainConfig, train

CFG = TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, iterations=30, eval_every=10)


@pytest.fixture(scope="module")
def data():
    return tiny_splits(n_train=400, n_test=100, val=100)


def fresh(name, data, seeds):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(models.build(name, data.input_shape, data.num_classes))
    return out


def masks_for(model, k, density=0.4):
    g = torch.Generator().manual_seed(k)
    return {n: torch.rand(m.shape, generator=g) < density for n, m in Mask.ones(model).items()}


@pytest.mark.parametrize("name", ["lenet_300_100", "conv2", "vgg_tiny", "mobilenet_tiny"])
def test_packed_forward_equals_each_model(name, data):
    ms = fresh(name, data, [0, 1, 2])
    net = PackedNet(ms, data.input_shape)  # checks itself on a random batch
    x = data.train_x[:12].reshape(3, 4, *data.input_shape)
    net.eval()
    for m in ms:
        m.eval()
    want = torch.stack([m(x[i]) for i, m in enumerate(ms)])
    torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(net.state(1)[n], t) for n, t in ms[1].state_dict().items())


def test_residual_networks_are_refused(data):
    assert not can_pack(models.build("resnet8", data.input_shape, 10), data.input_shape)
    with pytest.raises(PackError, match="pack:"):
        PackedNet(fresh("resnet8", data, [0, 1]), data.input_shape)
    with pytest.raises(PackError, match="differ in architecture"):
        PackedNet([models.build("lenet_300_100", data.input_shape, 10, hidden=(300, 100)),
                   models.build("lenet_300_100", data.input_shape, 10, hidden=(200, 100))])


@pytest.mark.parametrize("name,optimizer,channels_last", [("lenet_300_100", "adam", False),
                                                          ("vgg_tiny", "sgd", False),
                                                          ("vgg_tiny", "sgd", True)])
def test_a_packed_trial_equals_the_same_trial_alone(name, optimizer, channels_last, data):
    """Same init, same seeded batch order, own mask (and frozen-at-init fill for one trial):
    the same curve, selection and weights, to float tolerance (NHWC convs too)."""
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3, momentum=0.9,
                      weight_decay=1e-4, batch_size=32, iterations=30, eval_every=10,
                      channels_last=channels_last)
    seeds = [0, 1, 2]
    ms = fresh(name, data, seeds)
    masks = [masks_for(ms[0], k) for k in range(3)]
    fills = [None, {n: ms[1].state_dict()[n] for n in masks[1]}, None]  # trial 1: pruned frozen at init
    alone = []
    for k, m in enumerate(ms):
        m = copy.deepcopy(m)
        res = train(m, data, cfg, seed=seeds[k], hooks=[Mask(masks[k]).hook(m, fills[k])], keep_best=True)
        alone.append((m, res))
    net = PackedNet([copy.deepcopy(m) for m in ms], data.input_shape)
    packed = train_packed(net, data, cfg, seeds=seeds, masks=masks, fills=fills, keep_best=True)
    for k, (m, res) in enumerate(alone):
        got, want = packed[k], res
        assert [r["step"] for r in got.history] == [r["step"] for r in want.history]
        for a, b in zip(got.history, want.history):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3, abs=1e-4)
            assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.011)  # one image of 100
        assert got.early_stop["step"] == want.early_stop["step"]
        # NHWC grouped and single convs sum in other orders: after 30 steps at lr 0.05 with
        # momentum, a few weights drift up to ~3e-3 apart (the curves above still agree)
        atol = 5e-3 if channels_last else 2e-3
        for n, t in m.state_dict().items():
            torch.testing.assert_close(net.state(k)[n], t, rtol=1e-3, atol=atol)
            torch.testing.assert_close(got.best_state[n], want.best_state[n], rtol=1e-3, atol=atol)
        for n, keep in masks[k].items():  # masks hold through the optimiser
            pruned = net.state(k)[n][~keep]
            expect = fills[k][n][~keep] if fills[k] else torch.zeros_like(pruned)
            assert torch.equal(pruned, expect)


class Killed(RuntimeError):
    pass


def kill_at(step):
    """A log that kills the run at the evaluation of `step`."""
    def log(row):
        if row["step"] == step:
            raise Killed
    return log


def test_a_killed_pack_resumes_packed_or_alone_with_the_same_numbers(data, tmp_path):
    seeds = [0, 1]
    ms = fresh("lenet_300_100", data, seeds)
    masks = [masks_for(ms[0], k) for k in range(2)]
    ref_net = PackedNet([copy.deepcopy(m) for m in ms], data.input_shape)
    ref = train_packed(ref_net, data, CFG, seeds=seeds, masks=masks)

    ckpts = [tmp_path / f"c{k}.pt" for k in range(2)]
    with pytest.raises(Killed):  # dies at the evaluation of step 20: the checkpoint of 10 is on disk
        train_packed(PackedNet([copy.deepcopy(m) for m in ms], data.input_shape), data, CFG,
                     seeds=seeds, masks=masks, checkpoints=ckpts, logs=[kill_at(20), lambda r: None])
    assert torch.load(ckpts[0], weights_only=False)["step"] == 10
    saved = [c.read_bytes() for c in ckpts]
    net = PackedNet([copy.deepcopy(m) for m in ms], data.input_shape)
    resumed = train_packed(net, data, CFG, seeds=seeds, masks=masks, checkpoints=ckpts)
    for k in range(2):
        assert [r["val_loss"] for r in resumed[k].history] == pytest.approx(
            [r["val_loss"] for r in ref[k].history], rel=1e-6)
        for n, t in ref_net.state(k).items():
            torch.testing.assert_close(net.state(k)[n], t)
    # the same checkpoint resumed by the single-trial loop: trial 1 alone
    ckpts[1].write_bytes(saved[1])
    alone = copy.deepcopy(ms[1])
    res = train(alone, data, CFG, seed=1, hooks=[Mask(masks[1]).hook(alone)], checkpoint=ckpts[1])
    assert [r["val_loss"] for r in res.history] == pytest.approx(
        [r["val_loss"] for r in ref[1].history], rel=1e-4)


@pytest.mark.parametrize("every", ["0", "1e9"])
def test_patience_in_a_pack_stops_each_trial_where_it_stops_alone(data, tmp_path, monkeypatch, every):
    """With patience, a pack hands back its unfinished trials when one converges; repacking them
    from their checkpoints (as experiments.packing does) ends every trial at the step, and with
    the numbers, it reaches alone. The hand-back writes its checkpoints whatever the interval
    between checkpoints ($LAB_CHECKPOINT_EVERY_S: every evaluation, or never before the end)."""
    monkeypatch.setenv("LAB_CHECKPOINT_EVERY_S", every)
    cfg = TrainConfig(optimizer="adam", lr=0.05, batch_size=30, iterations=300, eval_every=10,
                      patience=3)
    seeds = [0, 1, 2]
    ms = fresh("lenet_300_100", data, seeds)
    alone = [train(copy.deepcopy(m), data, cfg, seed=s) for m, s in zip(ms, seeds)]
    live, final, rounds = list(range(3)), {}, 0
    while live:
        net = PackedNet([copy.deepcopy(ms[i]) for i in live], data.input_shape)
        res = train_packed(net, data, cfg, seeds=[seeds[i] for i in live],
                           checkpoints=[tmp_path / f"{i}.pt" for i in live])
        final.update({i: r for i, r in zip(live, res) if not r.unfinished})
        live, rounds = [i for i, r in zip(live, res) if r.unfinished], rounds + 1
    stops = [r.history[-1]["step"] for r in alone]
    assert len(set(stops)) > 1 and rounds > 1  # the trials converge at different steps
    for i, want in enumerate(alone):
        got = final[i]
        assert [r["step"] for r in got.history] == [r["step"] for r in want.history]
        # lr 0.05 makes float differences (batched vs single matmuls) grow: a few % by the end
        assert [r["val_loss"] for r in got.history] == pytest.approx(
            [r["val_loss"] for r in want.history], rel=0.1)


def supermasks(data, specs):
    """SupermaskNets on LeNet: (seed, frozen weights 'init' or 'signed_constant') per trial."""
    from lib.prune.ablations import signed_constant
    from lib.prune.supermask import SupermaskNet

    out = []
    for seed, kind in specs:
        base = fresh("lenet_300_100", data, [seed])[0]
        w = {n: p.detach() for n, p in base.named_parameters() if n in Mask.ones(base)}
        if kind == "signed_constant":
            w = {n: signed_constant(t) for n, t in w.items()}
        out.append(SupermaskNet(base, w, seed=seed))
    return out


SUPERMASK_CFG = TrainConfig(optimizer="adam", lr=0.05, batch_size=32, iterations=30, eval_every=10,
                            early_stop_on="val_acc")


def test_a_packed_learned_supermask_equals_the_same_trial_alone(data):
    """Each packed supermask draws its own Bernoulli masks (two trials share seed 0, as the
    experiment's init and signed-constant arms do): the same curve, sampled accuracy, mask
    density and logits as alone, to float tolerance."""
    from lib.prune.supermask import PackedSupermask, SampledAccuracy

    specs = [(0, "init"), (0, "signed_constant"), (1, "init")]
    nets = supermasks(data, specs)
    alone = []
    for net in copy.deepcopy(nets):
        alone.append((net, train(net, data, SUPERMASK_CFG, seed=net.seed, hooks=[SampledAccuracy(2)])))
    packed = PackedSupermask(copy.deepcopy(nets), data.input_shape, samples=2)
    got = train_packed(packed, data, SUPERMASK_CFG, seeds=[s for s, _ in specs],
                       metrics=lambda: packed.metrics(data))
    for k, (net, want) in enumerate(alone):
        assert [r["step"] for r in got[k].history] == [r["step"] for r in want.history]
        for a, b in zip(got[k].history, want.history):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5)
            assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.011)
            assert a["test_acc_sampled"] == pytest.approx(b["test_acc_sampled"], abs=0.011)
            assert a["mask_density"] == pytest.approx(b["mask_density"], abs=1e-3)
        assert got[k].history[-1]["mask_density"] not in (0.0, 1.0)  # the logits moved
        state = packed.state(k)
        assert list(state) == list(net.state_dict())
        assert int(state["draws"]) == int(net.draws) > 30  # every step and sample drew a mask
        for n, t in net.state_dict().items():
            if n.startswith("logits."):  # Adam's steps of lr 0.05 on near-zero gradients carry
                # float differences to a few 1e-3: within one step, and the same thresholded mask
                torch.testing.assert_close(state[n], t, rtol=0, atol=SUPERMASK_CFG.lr)
                assert ((state[n] > 0) == (t > 0)).float().mean() > 0.999, n
            else:
                assert torch.equal(state[n], t), n


def test_a_killed_supermask_pack_resumes_with_the_same_numbers(data, tmp_path):
    from lib.prune.supermask import PackedSupermask

    specs = [(0, "init"), (1, "signed_constant")]

    def run(ckpts=None, logs=None):
        net = PackedSupermask(supermasks(data, specs), data.input_shape, samples=2)
        return net, train_packed(net, data, SUPERMASK_CFG, seeds=[0, 1], checkpoints=ckpts,
                                 logs=logs, metrics=lambda: net.metrics(data))

    ref_net, ref = run()

    ckpts = [tmp_path / f"c{k}.pt" for k in range(2)]
    with pytest.raises(Killed):
        run(ckpts, [kill_at(20), lambda r: None])
    net, resumed = run(ckpts)
    for k in range(2):
        assert [r["test_acc_sampled"] for r in resumed[k].history] == [r["test_acc_sampled"] for r in ref[k].history]
        assert [r["val_loss"] for r in resumed[k].history] == pytest.approx(
            [r["val_loss"] for r in ref[k].history], rel=1e-6)
        for n, t in ref_net.state(k).items():
            torch.testing.assert_close(net.state(k)[n], t)


def test_largest_activation_and_the_pack_size_rule():
    """`experiments.packing` caps a CPU pack by its largest activation: vgg_narrow's first conv
    writes 16 x 28 x 28 values per row, a LeNet's widest layer 300; at batch 128, fp32, a 16 MB
    budget holds 2 full vgg_narrows (6.4 MB each), 4 at half width and 16 (MAX_PACK) LeNets."""
    from types import SimpleNamespace

    from experiments import packing

    shape = (1, 28, 28)
    vgg = models.build("vgg_narrow", shape, 10)
    half = models.build("vgg_narrow", shape, 10, widths=(8, "M", 16, "M", 32, 32, "M"))
    lenet = models.build("lenet_300_100", shape, 10)
    assert [packing.largest_activation(m, shape) for m in (vgg, half, lenet)] == [16 * 28 * 28, 8 * 28 * 28, 784]
    assert vgg.training  # the probe leaves the model's mode as it found it

    torch.manual_seed(7)
    state = torch.random.get_rng_state()

    def most(build, device="cpu", batch=128):
        ctx = SimpleNamespace(device=torch.device(device), data=SimpleNamespace(input_shape=shape))
        spec = SimpleNamespace(build=lambda: (torch.manual_seed(123), build())[1])
        return packing._max_pack(ctx, spec, TrainConfig(batch_size=batch, iterations=1))

    assert most(lambda: vgg) == 2 and most(lambda: half) == 4 and most(lambda: lenet) == packing.MAX_PACK
    assert most(lambda: vgg, batch=512) == 1 and most(lambda: vgg, device="meta") == packing.MAX_PACK
    assert torch.equal(torch.random.get_rng_state(), state)  # the probe's build left the generator alone
    # n trials in equal packs of at most `most`
    assert [packing._pack_size(n, 2) for n in (1, 2, 3, 6)] == [1, 2, 2, 2]
    assert [packing._pack_size(n, 4) for n in (4, 5, 9)] == [4, 3, 3]
    assert packing._pack_size(40) == 14 and packing._pack_size(3, 1) == 1
