"""Masks and iterative magnitude pruning: invariants on tiny shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lib import models
from lib.prune.criteria import CRITERIA, check_criterion, scores
from lib.prune.imp import PruneConfig, density_after, keep_top, prune, prune_round
from lib.prune.mask import Mask, MaskError, prunable_layers


def lenet():
    torch.manual_seed(0)
    return models.build("lenet_300_100", (1, 28, 28), 10)


def random_mask(model, density=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(p.shape, generator=g) < density
                 for n, p in model.named_parameters() if n in prunable_layers(model)})


def masked_steps(model, hook, opt, x, y, steps: int, first: int = 1):
    """`steps` optimiser steps on (x, y), the mask's hook called as the training loop calls it;
    yields after each step (numbered from `first`)."""
    for step in range(first, first + steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        hook.after_backward(model)
        opt.step()
        hook.after_step(model, step)
        yield step


@pytest.mark.parametrize("opt_name", ["sgd_momentum_wd", "adam_wd", "adamw"])
def test_masked_weights_stay_exactly_zero(opt_name):
    model = lenet()
    mask = random_mask(model)
    hook = mask.hook(model)
    params = list(model.parameters())
    opt = {"sgd_momentum_wd": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2),
           "adam_wd": lambda: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2),
           "adamw": lambda: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)}[opt_name]()
    # poison the optimiser state first: momentum for pruned weights is non-zero
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    hook.after_step(model, 1)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in masked_steps(model, hook, opt, x, y, 5, first=2):
        weights = dict(model.named_parameters())
        for name, m in mask.items():
            assert torch.all(weights[name][~m] == 0), name
            assert torch.any(weights[name][m] != 0)


def test_mask_fill_keeps_frozen_values_bit_equal():
    model = lenet()
    mask = random_mask(model)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    hook = mask.hook(model, fill=init)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-2)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    list(masked_steps(model, hook, opt, x, y, 3))  # train 3 steps
    for name, p in model.named_parameters():
        if name in mask:
            assert torch.equal(p[~mask[name]], init[name][~mask[name]])
            assert not torch.equal(p[mask[name]], init[name][mask[name]])


def test_mask_validation_errors_name_the_parameter(tmp_path):
    model = lenet()
    mask = Mask.ones(model)
    bad_shape = Mask({**mask, "net.1.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(MaskError, match=r"mask\['net.1.weight'\]: shape \(3, 3\)"):
        bad_shape.validate(model)
    with pytest.raises(MaskError, match="no such parameter"):
        Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}).validate(model)
    with pytest.raises(MaskError, match="dtype"):
        Mask({"net.1.weight": torch.ones(300, 784)}).validate(model)
    m = random_mask(model)
    m.save(tmp_path / "m.pt")
    back = Mask.load(tmp_path / "m.pt")
    assert set(back) == set(m) and all(torch.equal(back[n], m[n]) for n in m)


def test_prunable_layers_marks_output_and_skips_biases():
    kinds = prunable_layers(lenet())
    assert kinds == {"net.1.weight": "fc", "net.3.weight": "fc", "net.5.weight": "output"}
    conv = prunable_layers(models.build("conv2", (3, 32, 32), 10))
    assert [k for k in conv.values()] == ["conv", "conv", "fc", "fc", "output"]


def test_keep_top_exact_count_and_random_ties():
    score = torch.tensor([[3.0, 1.0, 1.0], [1.0, 5.0, 1.0]])
    alive = torch.ones(2, 3, dtype=torch.bool)
    keeps = set()
    for seed in range(20):
        k = keep_top(score, alive, 3, torch.Generator().manual_seed(seed))
        assert k.sum() == 3 and k[0, 0] and k[1, 1]
        keeps.add(tuple(k.flatten().tolist()))
    assert len(keeps) > 1  # the tie among the four 1.0s is broken differently by seed
    same = keep_top(score, alive, 3, torch.Generator().manual_seed(7))
    assert torch.equal(same, keep_top(score, alive, 3, torch.Generator().manual_seed(7)))
    dead = alive.clone()
    dead[1, 1] = False
    assert not keep_top(score, dead, 3, torch.Generator().manual_seed(0))[1, 1]


def test_large_final_matches_torch_prune_oracle():
    torch.manual_seed(1)
    layer = nn.Linear(40, 30)
    w = layer.weight.detach().clone()
    mask = Mask({"weight": torch.ones_like(w, dtype=torch.bool)})
    ours = prune_round({"weight": w.abs()}, mask, {"weight": 0.37}, generator=torch.Generator())
    torch_prune.l1_unstructured(layer, "weight", amount=round(0.37 * w.numel()))
    assert torch.equal(ours["weight"], layer.weight_mask.bool())


@pytest.mark.parametrize("levels,expected", [(3, 0.513), (7, 0.211), (15, 0.036)])
def test_lenet_fraction_left_matches_paper(levels, expected):
    model = lenet()
    kinds = prunable_layers(model)
    w = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    mask, cfg = Mask.ones(model), PruneConfig()
    for level in range(levels):
        mask = prune(cfg, mask, kinds, w, w, torch.Generator().manual_seed(level))
    sizes = {n: m.numel() for n, m in mask.items()}
    assert mask.density() == pytest.approx(expected, abs=6e-4)
    assert mask.density() == pytest.approx(density_after(levels, sizes, cfg.rates(kinds)), abs=1e-12)
    # per layer: exactly the paper's rates, compounded with per-round rounding
    alive = dict(sizes)
    for _ in range(levels):
        alive = {n: a - round(cfg.rates(kinds)[n] * a) for n, a in alive.items()}
    assert {n: int(m.sum()) for n, m in mask.items()} == alive


def test_pruning_only_removes_live_weights_and_keeps_the_largest():
    model = lenet()
    kinds = prunable_layers(model)
    w = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    m1 = prune(PruneConfig(), Mask.ones(model), kinds, w, w, torch.Generator())
    m2 = prune(PruneConfig(), m1, kinds, w, w, torch.Generator())
    for n in m1:
        assert not torch.any(m2[n] & ~m1[n])  # nothing comes back to life
        kept, dropped = w[n][m1[n]].abs(), w[n][~m1[n]].abs()
        assert kept.min() >= dropped.max()


def test_global_scope_ranks_across_layers():
    model = lenet()
    kinds = prunable_layers(model)
    w = {n: p.detach() for n, p in model.named_parameters() if n in kinds}
    mask = prune(PruneConfig(scope="global", rate_fc=0.5, global_output=True), Mask.ones(model),
                 kinds, w, w, torch.Generator())
    total = sum(m.numel() for m in mask.values())
    assert mask.kept() == total - round(0.5 * total)
    kept = torch.cat([w[n][mask[n]].abs() for n in mask])
    dropped = torch.cat([w[n][~mask[n]].abs() for n in mask])
    assert kept.min() >= dropped.max()


@pytest.mark.parametrize("field,value", [("rate_fc", 1.0), ("rate_conv", -0.1), ("rate_output", 1.5)])
def test_prune_rate_outside_range_is_one_line_error(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: must be in \[0, 1\), got {value}$"):
        PruneConfig(**{field: value}).validate()


def test_unknown_criterion_and_scope():
    with pytest.raises(ValueError, match="criterion: unknown 'biggest', choose from large_final"):
        check_criterion("biggest")
    with pytest.raises(ValueError, match="scope: unknown 'net'"):
        PruneConfig(scope="net").validate()


def test_criteria_scores_on_a_hand_made_tensor():
    wi = torch.tensor([1.0, -2.0, 0.5, -0.1])
    wf = torch.tensor([-3.0, -1.0, 0.2, 0.4])
    g = torch.Generator()
    expect = {
        "large_final": [3.0, 1.0, 0.2, 0.4],
        "small_final": [-3.0, -1.0, -0.2, -0.4],
        "large_init": [1.0, 2.0, 0.5, 0.1],
        "magnitude_increase": [2.0, -1.0, -0.3, 0.3],
        "movement": [4.0, 1.0, 0.3, 0.5],
        "large_final_same_sign": [0.0, 1.0, 0.2, 0.0],
        "large_final_diff_sign": [3.0, 0.0, 0.0, 0.4],
    }
    for name, values in expect.items():
        got = scores(name, {"w": wi}, {"w": wf}, g)["w"]
        assert torch.allclose(got, torch.tensor(values)), name
    assert set(CRITERIA) >= set(expect) | {"random", "large_init_large_final", "small_init_small_final"}
