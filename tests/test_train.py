"""The training loop: resume is exact, early stopping reads validation only, hooks work."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from conftest import tiny_splits
from lib import models
from lib.train import Hook, TrainConfig, TrainResult, make_optimizer, train


class Crash(Hook):
    def __init__(self, at: int):
        self.at = at

    def after_step(self, model, step):
        if step == self.at:
            raise KeyboardInterrupt("simulated kill")


def build(seed=0):
    torch.manual_seed(seed)
    return models.build("lenet_300_100", (1, 28, 28), 10)


CFG = TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, iterations=60, eval_every=20)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    data = tiny_splits()
    whole = build()
    ref = train(whole, data, CFG, seed=3)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        train(build(), data, CFG, seed=3, hooks=[Crash(at=30)], checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=False)["step"] == 20
    resumed_model = build()
    logged = []
    resumed = train(resumed_model, data, CFG, seed=3, checkpoint=ckpt, log=logged.append)
    for (n, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), n
    strip = lambda h: [{k: v for k, v in r.items() if k != "train_loss"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(ref.history)
    assert [r["step"] for r in logged] == [0, 20, 40, 60]  # restored rows are replayed to the log


def test_same_seed_same_result_different_seed_differs():
    data = tiny_splits()
    a, b, c = build(), build(), build()
    train(a, data, CFG, seed=1)
    train(b, data, CFG, seed=1)
    train(c, data, CFG, seed=2)
    assert torch.equal(a.net[1].weight, b.net[1].weight)
    assert not torch.equal(a.net[1].weight, c.net[1].weight)


def test_early_stop_is_min_validation_loss():
    res = TrainResult(history=[
        dict(step=0, val_loss=2.0, val_acc=0.1, test_acc=0.1),
        dict(step=10, val_loss=0.5, val_acc=0.8, test_acc=0.7),
        dict(step=20, val_loss=0.7, val_acc=0.85, test_acc=0.9),
    ])
    s = res.summary()
    assert (s["early_stop_iter"], s["test_acc"], s["final_test_acc"]) == (10, 0.7, 0.9)


def test_history_has_initial_point_and_learning_happens():
    data = tiny_splits()
    res = train(build(), data, TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, epochs=3), seed=0)
    steps = [r["step"] for r in res.history]
    assert steps[0] == 0 and steps[-1] == 3 * (len(data.train_x) // 32)
    assert math.isnan(res.history[0]["train_loss"])
    assert res.final["val_acc"] > res.history[0]["val_acc"] + 0.3
    assert 0 <= res.summary()["test_acc"] <= 1


def test_extra_loss_and_hook_parameters_are_trained():
    data = tiny_splits()

    class Anchor(Hook):
        def __init__(self):
            self.p = torch.nn.Parameter(torch.tensor(5.0))
            self.calls = 0

        def parameters(self):
            return [self.p]

        def extra_loss(self, x, y, logits):
            self.calls += 1
            return self.p ** 2

    hook = Anchor()
    train(build(), data, TrainConfig(optimizer="sgd", lr=0.1, batch_size=32, iterations=20,
                                     eval_every=20), seed=0, hooks=[hook])
    assert hook.calls == 20 and abs(hook.p.item()) < 5.0 * 0.9 ** 10


@pytest.mark.parametrize("kw,field", [
    ({"optimizer": "rmsprop", "iterations": 1}, "optimizer"),
    ({"schedule": "poly", "iterations": 1}, "schedule"),
    ({"lr": 0.0, "iterations": 1}, "lr"),
    ({}, "iterations/epochs"),
    ({"iterations": 5, "epochs": 1.0}, "iterations/epochs"),
    ({"batch_size": 0, "iterations": 1}, "batch_size"),
    ({"iterations": 1, "budget": 0.0}, "budget"),
    ({"iterations": 1, "budget": 1.5}, "budget"),
])
def test_bad_config_is_a_one_line_error_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}: ") as e:
        TrainConfig(**kw).validate()
    assert "\n" not in str(e.value)


def test_lr_schedules():
    cos = TrainConfig(lr=1.0, iterations=100, schedule="cosine")
    assert cos.lr_at(0, 100) == 1.0 and cos.lr_at(50, 100) == pytest.approx(0.5)
    step = TrainConfig(lr=1.0, iterations=100, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [step.lr_at(s, 100) for s in (0, 49, 50, 75)] == pytest.approx([1, 1, 0.1, 0.01])


def test_budget_cuts_the_steps_and_keeps_the_schedule_shape():
    """--budget f trains round(f x the recipe's steps), at least one; milestones are fractions
    of the steps trained, so 240 epochs cut to 24 still drop the lr at 150/240 of them."""
    full = TrainConfig(lr=0.05, batch_size=64, epochs=240.0, schedule="step",
                       milestones=(150 / 240, 180 / 240, 210 / 240))
    assert full.total_steps(50_000) == 240 * 781
    cut = replace(full, budget=0.1)
    assert cut.total_steps(50_000) == round(240 * 781 * 0.1) == 18744
    assert replace(full, budget=1e-9).total_steps(50_000) == 1
    assert replace(full, epochs=0.0, iterations=50_000, budget=1e-4).total_steps(10) == 5
    total = cut.total_steps(50_000)
    assert [cut.lr_at(s, total) for s in (11714, 11715, 14057, 14058, 16400, 16401)] == \
        pytest.approx([0.05, 0.005, 0.005, 0.0005, 0.0005, 0.00005])


def test_recipe_text_names_the_milestones_and_the_cut():
    from lib.report import recipe_text

    t = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                    epochs=240.0, schedule="step", milestones=(150 / 240, 180 / 240, 210 / 240),
                    augment=True)
    assert recipe_text(t) == ("sgd lr 0.05, momentum 0.9, weight decay 0.0005, batch 64, 240 epochs, "
                              "step schedule (lr ×0.1 at epochs 150, 180, 210), crop+flip augmentation")
    cut = replace(t, epochs=0.0, iterations=1000, milestones=(0.5,), budget=0.01)
    assert recipe_text(cut).endswith("1000 iterations, step schedule (lr ×0.1 at iterations 500), "
                                     "crop+flip augmentation, cut to 0.01 of its steps (--budget)")


def test_on_batch_sees_the_indices_of_the_batch_trained_on():
    data = tiny_splits()
    seen = []

    class Spy(Hook):
        def on_batch(self, index):
            self.index = index.clone()

        def extra_loss(self, x, y, logits):
            seen.append(bool(torch.equal(x, data.train_x[self.index]))
                        and bool(torch.equal(y, data.train_y[self.index])))
            return None

    model = models.build("lenet_300_100", data.input_shape, data.num_classes)
    train(model, data, TrainConfig(optimizer="adam", lr=1e-3, batch_size=16, iterations=12),
          seed=0, hooks=[Spy()])
    assert len(seen) == 12 and all(seen)


def test_channels_last_trains_to_the_same_weights():
    data = tiny_splits(shape=(3, 8, 8))
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, iterations=6)
    out = []
    for cl in (False, True):
        torch.manual_seed(0)
        m = models.build("vgg_small", data.input_shape, data.num_classes, widths=(4, "M", 8))
        train(m, data, replace(cfg, channels_last=cl), seed=0)
        out.append(m)
    assert out[1].features[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(out[0].parameters(), out[1].parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_training_never_imports_torch_dynamo_and_steps_like_torch(tmp_path):
    """The loop's optimiser skips torch's dynamo wrappers (0.75 s of start-up) and gives the same
    updates, bit for bit, as the wrapped `step`."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import sys
sys.path[:0] = [{str(Path(__file__).parents[1])!r}, {str(Path(__file__).parent)!r}]
import torch
from conftest import tiny_splits
from lib import models
from lib.train import TrainConfig, make_optimizer, train
data = tiny_splits(n_train=200, n_test=50, val=50)
for opt in ("adam", "sgd"):
    cfg = TrainConfig(optimizer=opt, lr=0.01, momentum=0.9, batch_size=32, iterations=12, eval_every=6)
    train(models.build("lenet_300_100", data.input_shape, 10), data, cfg, seed=0,
          checkpoint={str(tmp_path)!r} + "/" + opt + ".pt")
    o = make_optimizer([torch.nn.Parameter(torch.ones(3))], cfg)
    o.load_state_dict(o.state_dict())
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for name in ("adam", "sgd"):
        cfg = TrainConfig(optimizer=name, lr=0.01, momentum=0.9, weight_decay=1e-4)
        ours, plain = [torch.nn.Parameter(torch.linspace(-1, 1, 5)) for _ in range(2)]
        fast = make_optimizer([ours], cfg)
        ref = (torch.optim.Adam if name == "adam" else torch.optim.SGD)(
            [plain], lr=0.01, weight_decay=1e-4, fused=True, **({} if name == "adam" else {"momentum": 0.9}))
        for step in range(3):
            for p, o in ((ours, fast), (plain, ref)):
                p.grad = torch.sin(p.detach() * (step + 1))
                o.step()
        assert torch.equal(ours, plain)


def test_bf16_autocast_reaches_fp32_accuracy():
    """--precision bf16 (autocast for the forward pass, fp32 weights and optimiser) trains LeNet
    on a Fashion-MNIST subset to within 2 points of fp32 test accuracy (same init, same batches)."""
    from lib import data as datasets
    from lib import models

    data = datasets.load("fashion_mnist", val_size=500, train_limit=3000, test_limit=1000)
    accs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = models.build("lenet_300_100", data.input_shape, data.num_classes)
        cfg = TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60, iterations=200, eval_every=100,
                          precision=precision)
        accs[precision] = train(model, data, cfg, seed=0).final["test_acc"]
    assert accs["fp32"] > 0.7
    assert abs(accs["bf16"] - accs["fp32"]) <= 0.02, accs
    with pytest.raises(ValueError, match="precision: unknown 'fp8'"):
        TrainConfig(iterations=1, precision="fp8").validate()


def test_patience_stops_a_converged_trial_and_a_resume_keeps_it_stopped(tmp_path):
    """With patience P, training stops at the first evaluation that is P evaluations past the
    selected one: that selection is then never the last evaluation; resuming from the final
    checkpoint trains no further."""
    data = tiny_splits(n_train=300, n_test=100, val=100)
    cfg = TrainConfig(optimizer="adam", lr=0.05, batch_size=30, iterations=400, eval_every=10,
                      patience=3)
    torch.manual_seed(0)
    model = models.build("lenet_300_100", data.input_shape, 10)
    res = train(model, data, cfg, seed=0, checkpoint=tmp_path / "c.pt")
    steps = [r["step"] for r in res.history]
    best = res.early_stop["step"]
    assert steps[-1] < 400 and steps[-1] == best + 3 * 10  # stopped 3 evaluations after the best
    assert not res.summary()["selected_last"]
    losses = [r["val_loss"] for r in res.history]
    assert min(losses[-3:]) >= min(losses[:-3])  # the last 3 evaluations did not improve
    again = train(model, data, cfg, seed=0, checkpoint=tmp_path / "c.pt")
    assert [r["step"] for r in again.history] == steps  # resumed: already done, nothing added
    with pytest.raises(ValueError, match="patience: must be >= 0"):
        TrainConfig(iterations=1, patience=-1).validate()


@pytest.mark.parametrize("every,steps", [("0", [20, 40, 60]), ("1e9", [60])])
def test_checkpoints_at_the_interval_and_always_at_the_end(tmp_path, monkeypatch, every, steps):
    """$LAB_CHECKPOINT_EVERY_S = 0 saves at every evaluation; a long interval only at the last
    step, and a run resumed from that checkpoint trains no further and gives the same history."""
    import lib.train as lt

    saved = []
    monkeypatch.setenv("LAB_CHECKPOINT_EVERY_S", every)
    monkeypatch.setattr(lt, "atomic_torch_save", lambda obj, path: saved.append(obj["step"]) or
                        torch.save(obj, path))
    data, ckpt = tiny_splits(), tmp_path / "c.pt"
    res = train(build(), data, CFG, seed=3, checkpoint=ckpt)
    assert saved == steps
    again = train(build(), data, CFG, seed=3, checkpoint=ckpt)
    assert saved == steps
    assert [(r["step"], r["val_loss"]) for r in again.history] == [(r["step"], r["val_loss"]) for r in res.history]


def test_a_bad_checkpoint_interval_is_one_line(monkeypatch):
    from lib.runs import checkpoint_every_s

    for bad, msg in [("soon", "expected seconds, got 'soon'"), ("-1", "must be >= 0, got -1")]:
        monkeypatch.setenv("LAB_CHECKPOINT_EVERY_S", bad)
        with pytest.raises(ValueError, match=f"LAB_CHECKPOINT_EVERY_S: {msg}"):
            checkpoint_every_s()


def test_budget_reaches_every_training_stage():
    """`--budget` sets the cut on every recipe of a preset: the trials', the teacher's, the
    fine-tuning's and QAT's (compression_pipeline has all four), nothing else changed."""
    from dataclasses import fields, is_dataclass

    from experiments.cli import with_budget
    from experiments.compression_pipeline.config import for_scale

    def recipes(obj, path=""):
        if isinstance(obj, TrainConfig):
            return {path: obj}
        if not is_dataclass(obj):
            return {}
        return {k: v for f in fields(obj) for k, v in recipes(getattr(obj, f.name), f"{path}.{f.name}").items()}

    cfg = for_scale("paper")
    cut = with_budget(cfg, 0.25)
    before, after = recipes(cfg), recipes(cut)
    assert {".setup.train", ".teacher.train", ".finetune", ".qat"} <= set(after)
    assert all(after[k] == replace(before[k], budget=0.25) for k in before)
    assert replace(cut, **{f.name: getattr(cfg, f.name) for f in fields(cfg)
                           if f.name in ("setup", "teacher", "finetune", "qat")}) == cfg


def test_evaluation_in_chunks_equals_one_forward():
    """`evaluate` in its CPU chunks of 128 rows (300 rows: two full chunks and a remainder)
    gives one forward's loss and accuracy, on a conv net with BatchNorm in eval mode; so does
    the packed evaluation, trial by trial."""
    from lib.pack import PackedNet
    from lib.packed_train import evaluate_packed
    from lib.train import eval_chunk, evaluate

    torch.manual_seed(0)
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    nets = [models.build("vgg_narrow", (1, 28, 28), 10) for _ in range(2)]
    for net in nets:  # non-trivial BN statistics, so eval mode matters
        net.train()
        net(torch.randn(64, 1, 28, 28) * 3 + 1)
    assert eval_chunk(x) == 128 < len(x)
    whole = [evaluate(net, x, y, chunk=len(x)) for net in nets]
    for net, (loss, acc) in zip(nets, whole):
        got = evaluate(net, x, y)
        assert got[0] == pytest.approx(loss, rel=1e-5) and got[1] == acc
        assert net.training  # evaluate restores the mode it found
    losses, accs = evaluate_packed(PackedNet(nets), x, y)
    assert losses == pytest.approx([w[0] for w in whole], rel=1e-5)
    assert accs == [w[1] for w in whole]


def test_evaluation_builds_no_autograd_graph():
    """`evaluate` and `evaluate_packed` run their forwards with gradients off (a forward hook
    records the grad mode of every call), and leave the caller's grad mode as they found it."""
    from lib.pack import PackedNet
    from lib.packed_train import evaluate_packed
    from lib.train import evaluate

    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    nets = [models.build("lenet_300_100", (1, 28, 28), 10) for _ in range(2)]
    packed = PackedNet(nets)
    seen: list[bool] = []
    for m in (*nets, packed):
        m.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    evaluate(nets[0], x, y)
    evaluate_packed(packed, x, y)
    assert len(seen) >= 6 and not any(seen)  # 3 chunks each, at least
    assert torch.is_grad_enabled()
