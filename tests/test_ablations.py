"""Deconstructing-lottery-tickets pieces: criteria, one-shot masks, mask-1/mask-0, supermasks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_splits
from lib import models
from lib.prune.ablations import MASK1, mask0_fill, mask1_values
from lib.prune.criteria import CRITERIA, scores
from lib.prune.imp import PruneConfig, keep_top, kept_after, prune_oneshot
from lib.prune.mask import Mask, prunable_layers
from lib.prune.supermask import SampledAccuracy, SupermaskNet
from lib.train import TrainConfig, train

# w_init and w_final of a 6-weight layer
WI = torch.tensor([0.9, -0.1, 0.5, -0.7, 0.2, 0.05])
WF = torch.tensor([1.0, 0.8, -0.6, -0.1, 0.3, 0.04])


def kept(name: str, k: int = 3, seed: int = 0) -> set[int]:
    s = scores(name, {"w": WI}, {"w": WF}, torch.Generator().manual_seed(seed))["w"]
    return set(keep_top(s, torch.ones(6, dtype=torch.bool), k, torch.Generator().manual_seed(seed))
               .nonzero().flatten().tolist())


def test_each_criterion_keeps_the_expected_set():
    assert kept("large_final") == {0, 1, 2}
    assert kept("small_final") == {3, 4, 5}
    assert kept("large_init") == {0, 2, 3}
    assert kept("small_init") == {1, 4, 5}
    assert kept("movement") == {1, 2, 3}
    # magnitude_increase: .1, .7, .1, -.6, .1, -.01 -> index 1, then two of the three .1 ties
    mi = kept("magnitude_increase")
    assert 1 in mi and mi <= {0, 1, 2, 4}
    # same sign (0, 3, 4, 5 kept their sign): largest |wf| among them are 0 (1.0), 4 (.3), 3 (.1)
    assert kept("large_final_same_sign") == {0, 4, 3}
    # diff sign: only 1 and 2 flipped; the third pick is a random tie among zeros
    assert {1, 2} <= kept("large_final_diff_sign")
    # both large: ranks of |wi| (5,1,3,4,2,0) and |wf| (5,4,3,1,2,0), min (5,1,3,1,2,0): 0 and 2
    assert kept("large_init_large_final", k=2) == {0, 2}
    assert kept("small_init_small_final", k=2) == {4, 5}
    rand = {frozenset(kept("random", seed=s)) for s in range(10)}
    assert len(rand) > 1


def lenet(seed=0):
    torch.manual_seed(seed)
    return models.build("lenet_300_100", (1, 28, 28), 10)


@pytest.mark.parametrize("criterion", list(CRITERIA))
@pytest.mark.parametrize("levels", [1, 7, 15])
def test_oneshot_reaches_exact_per_layer_sparsity(criterion, levels):
    model, final = lenet(0), lenet(1)
    kinds = prunable_layers(model)
    wi = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    wf = {n: p.detach() for n, p in final.named_parameters() if n in kinds}
    rates = PruneConfig().rates(kinds)
    mask = prune_oneshot(scores(criterion, wi, wf, torch.Generator()), rates, levels, torch.Generator())
    expected = kept_after(levels, {n: w.numel() for n, w in wi.items()}, rates)
    assert {n: int(m.sum()) for n, m in mask.items()} == expected


def layer_setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    wi, fresh = torch.randn(20, 30, generator=g), torch.randn(20, 30, generator=g)
    keep = torch.rand(20, 30, generator=g) < 0.3
    return wi, fresh, keep


def values(name, seed=0):
    wi, fresh, keep = layer_setup(seed)
    return wi, keep, mask1_values(name, {"w": wi}, {"w": fresh}, {"w": keep}, torch.Generator().manual_seed(1))["w"]


def test_reshuffles_keep_the_multiset_of_kept_init_values():
    wi, keep, v = values("random_reshuffle")
    assert torch.equal(v[keep].sort().values, wi[keep].sort().values)
    assert not torch.equal(v[keep], wi[keep])
    wi, keep, v = values("signed_reshuffle")
    assert torch.equal(v[keep].abs().sort().values, wi[keep].abs().sort().values)


@pytest.mark.parametrize("name", ["signed_reinit", "signed_reshuffle", "signed_constant", "rewind"])
def test_signed_variants_keep_every_sign(name):
    wi, keep, v = values(name)
    assert torch.equal(torch.sign(v[keep]), torch.sign(wi[keep]))


def test_signed_constant_magnitude_is_the_layer_init_std():
    wi, keep, v = values("signed_constant")
    assert torch.allclose(v.abs(), torch.full_like(v, wi.std().item()))
    wi, keep, v = values("random_signed_constant")
    assert torch.allclose(v.abs(), torch.full_like(v, wi.std().item()))
    assert (torch.sign(v[keep]) != torch.sign(wi[keep])).float().mean() > 0.3  # signs are random
    # the authors shuffle the layer's init signs: as many positive weights as at init
    assert int((v > 0).sum()) == int((wi > 0).sum())


def authors_both_large(a: np.ndarray, b: np.ndarray, k: int) -> set[int] | None:
    """The authors' rule, independently: keep where both a and b are at or above their q-th
    percentile, for the q that keeps exactly k (None when no q does, e.g. with ties)."""
    qs = np.linspace(0, 100, 20001)
    keep = (a >= np.percentile(a, qs)[:, None]) & (b >= np.percentile(b, qs)[:, None])
    hits = np.flatnonzero(keep.sum(axis=1) == k)  # every q, vectorised: one row per q
    return set(np.flatnonzero(keep[hits[0]]).tolist()) if len(hits) else None


@pytest.mark.parametrize("name,sign", [("large_init_large_final", 1), ("small_init_small_final", -1)])
@pytest.mark.parametrize("seed", range(4))
def test_init_and_final_criteria_match_the_authors_percentile_rule(name, sign, seed):
    """Zhou et al.'s code keeps a weight when |w_i| and |w_f| both pass one within-layer
    percentile; checked against that rule on random layers, where the old α-scaled
    min(α|w_i|, |w_f|) ranking disagrees."""
    g = torch.Generator().manual_seed(seed)
    wi, wf = torch.randn(40, generator=g), torch.randn(40, generator=g) * 3
    for k in (5, 12, 25):
        want = authors_both_large(sign * wi.abs().numpy(), sign * wf.abs().numpy(), k)
        if want is None:
            continue
        s = scores(name, {"w": wi}, {"w": wf}, torch.Generator())["w"]
        got = keep_top(s, torch.ones(40, dtype=torch.bool), k, torch.Generator().manual_seed(0))
        assert set(got.nonzero().flatten().tolist()) == want, (name, k)


def test_init_and_final_ranks_count_only_live_weights():
    """In iterative pruning dead weights (zero in w_f, any |w_i|) must not shift the ranks."""
    wi = torch.tensor([5.0, 0.1, 0.9, 0.5, 0.3])
    wf = torch.tensor([0.0, 0.2, 0.8, 0.6, 0.1])
    alive = {"w": torch.tensor([False, True, True, True, True])}
    s = scores("large_init_large_final", {"w": wi}, {"w": wf}, torch.Generator(), alive=alive)["w"]
    # among live: ranks |wi| (1:0, 2:3, 3:2, 4:1), |wf| (1:1, 2:3, 3:2, 4:0) -> keep 2 then 3
    assert s[2] > s[3] > max(s[1], s[4])


def test_global_pruning_ignores_the_output_layer_unless_asked():
    from lib.prune.imp import prune

    model = lenet()
    kinds = prunable_layers(model)
    w = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    out = next(n for n, k in kinds.items() if k == "output")
    ones = Mask.ones(model)
    g = torch.Generator().manual_seed(0)
    m = prune(PruneConfig(scope="global", rate_fc=0.5), ones, kinds, w, w, g)
    assert bool(m[out].all()) and sum(int(v.sum()) for n, v in m.items() if n != out) == round(
        0.5 * sum(v.numel() for n, v in m.items() if n != out))
    m = prune(PruneConfig(scope="global", rate_fc=0.5, global_output=True), ones, kinds, w, w, g)
    assert not bool(m[out].all())


def test_random_reinit_uses_fresh_values():
    wi, fresh, keep = layer_setup()
    v = mask1_values("random_reinit", {"w": wi}, {"w": fresh}, {"w": keep}, torch.Generator())["w"]
    assert torch.equal(v, fresh)


def test_unknown_ablation_is_one_line_error():
    with pytest.raises(ValueError, match="^ablation: unknown 'flip', choose from rewind, random_reinit"):
        mask1_values("flip", {}, {}, {}, torch.Generator())
    with pytest.raises(ValueError, match="^mask0: unknown 'one', choose from zero, freeze_init"):
        mask0_fill("one", {}, {}, {})
    assert set(MASK1) == {"rewind", "random_reinit", "random_reshuffle", "signed_reinit",
                          "signed_reshuffle", "signed_constant", "random_signed_constant"}


@pytest.mark.parametrize("mask0", ["freeze_init", "freeze_init_zero_mask"])
def test_mask0_frozen_weights_are_bit_equal_to_init_after_training(mask0):
    data = tiny_splits()
    model, final = lenet(0), lenet(1)
    kinds = prunable_layers(model)
    wi = {n: p.detach().clone() for n, p in model.named_parameters() if n in kinds}
    wf = {n: p.detach().clone() for n, p in final.named_parameters() if n in kinds}
    mask = prune_oneshot(scores("large_final", wi, wf, torch.Generator()), PruneConfig().rates(kinds), 3,
                         torch.Generator())
    fill = mask0_fill(mask0, wi, wf, mask)
    train(model, data, TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, iterations=30,
                                   eval_every=30, weight_decay=1e-3),
          seed=0, hooks=[mask.hook(model, fill)])
    for n, p in model.named_parameters():
        if n in mask:
            pruned = ~mask[n]
            assert torch.equal(p.detach()[pruned], fill[n][pruned])
            assert not torch.equal(p.detach()[mask[n]], wi[n][mask[n]])  # kept ones trained
    if mask0 == "freeze_init_zero_mask":
        shrank = {n: wf[n].abs() < wi[n].abs() for n in mask}
        n = "net.1.weight"
        assert torch.all(fill[n][~mask[n] & shrank[n]] == 0)
        assert torch.equal(fill[n][~mask[n] & ~shrank[n]], wi[n][~mask[n] & ~shrank[n]])


def test_supermask_trains_logits_only():
    data = tiny_splits()
    base = lenet(0)
    kinds = prunable_layers(base)
    weights = {n: p.detach().clone() for n, p in base.named_parameters() if n in kinds}
    params_before = {n: p.detach().clone() for n, p in base.named_parameters()}
    net = SupermaskNet(base, weights, seed=0)
    logits_before = {k: v.detach().clone() for k, v in net.logits.items()}
    res = train(net, data, TrainConfig(optimizer="adam", lr=0.05, batch_size=32, iterations=20,
                                       eval_every=10, early_stop_on="val_acc"),
                seed=0, hooks=[SampledAccuracy(samples=1)])
    assert all(not torch.equal(logits_before[k], v) for k, v in net.logits.items())
    for n, p in base.named_parameters():
        assert torch.equal(p, params_before[n]), n
    for n, k in zip(net.names, net.keys):
        assert torch.equal(getattr(net, f"frozen__{k}"), weights[n])
    assert {"test_acc_sampled", "mask_density"} <= set(res.history[-1])
    assert 0 < res.history[-1]["mask_density"] < 1


def test_supermask_straight_through_gradient_reaches_logits():
    base = lenet(0)
    weights = {n: p.detach().clone() for n, p in base.named_parameters() if n in prunable_layers(base)}
    net = SupermaskNet(base, weights, seed=0)
    net.train()
    net(torch.randn(4, 1, 28, 28)).sum().backward()
    for k, v in net.logits.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, k
    net.eval()
    a = net(torch.ones(2, 1, 28, 28))
    assert torch.equal(a, net(torch.ones(2, 1, 28, 28)))  # threshold mode is deterministic
