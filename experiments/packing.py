"""Training a list of trials, packed K at a time where their model allows (`lib.pack`).

An experiment describes each trial as a `TrialSpec` (its run folder, name, seed, how to build
its starting model, its mask, what to save after) and hands a list of them to `train_all`.
Finished trials are read back, never recomputed; the rest train in packs of `pack` trials that
share a recipe (0: as many as fit, `_max_pack`), each with its own run folder, checkpoint,
metrics.csv, wandb run and result, exactly as `run_trial` would write them. Trials whose
model cannot be packed (a residual net), or that need loop hooks, train alone, unless their
spec packs them with what the hooks do (`pack_with`: learned supermasks).
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from experiments import provenance
from experiments.common import Context
from experiments.trial import POLICY, Missing
from lib.log import TrialLog
from lib.pack import PackError, PackedNet
from lib.packed_train import train_packed
from lib.prune.mask import Mask
from lib.runs import CLAIMS, Run, flat_config, read_checkpoint
from lib.train import Hook, TrainConfig, TrainResult


@dataclass
class TrialSpec:
    """One trial to train: the arguments of `run_trial`, with the mask as data (packable)."""

    run: Run
    name: str
    seed: int
    build: Callable[[], nn.Module]
    stage: str = "train"
    mask: Mask | None = None
    fill: dict[str, Tensor] | None = None  # fixed values of pruned weights (default zero)
    hooks_for: Callable[[nn.Module], Sequence[Hook]] | None = None  # other hooks: trains alone
    # ... unless `pack_with(models)` packs them with what those hooks do (its `metrics(data)`)
    pack_with: Callable[[list[nn.Module]], nn.Module] | None = None
    after: Callable[[nn.Module, TrainResult], dict | None] | None = None


def train_all(ctx: Context, specs: Sequence[TrialSpec], train_cfg: TrainConfig, pack: int = 0,
              keep_best: bool = False) -> list[dict]:
    """Every spec's result dict, in order; trials not done yet are trained, packed if possible.

    Each trial is claimed first (`lib.runs.Claim`): this process packs only the trials it got
    (a worker of N takes about 1/N of those free, starting at its own offset), then takes more
    while some are free, then waits for the ones other workers train (or takes over their stale
    claims). With `--report-only` nothing is trained: unfinished trials raise `Missing`."""
    missing = [(s.run, s.name) for s in specs if not s.run.done]
    if missing and not POLICY.train:
        raise Missing(missing)
    while missing:
        with contextlib.ExitStack() as held:
            mine = [s for s in POLICY.share([s for s in specs if not s.run.done],
                                            lambda s: held.enter_context(CLAIMS.hold(s.run.dir)))
                    if not s.run.done]
            if not mine:
                break
            _train_claimed(ctx, mine, train_cfg, pack, keep_best)
    # the rest were claimed by other workers: wait for them (or take over a stale claim)
    return [s.run.result() if s.run.done else _train_alone(ctx, s, train_cfg, keep_best)
            for s in specs]


def _train_claimed(ctx: Context, todo: list[TrialSpec], train_cfg: TrainConfig, pack: int,
                   keep_best: bool) -> None:
    """Train the trials `todo` this process holds the claims of, packed where they can be."""
    alone = [s for s in todo if (s.hooks_for is not None and s.pack_with is None) or pack == 1]
    steps = {id(s): _checkpoint_step(s.run) for s in todo if s not in alone}
    _restart_split_pack([s for s in todo if s not in alone], steps)
    # a pack resumes from one step, and holds trials of one kind (plain or `pack_with`)
    by_step: dict[tuple[int, bool], list[TrialSpec]] = defaultdict(list)
    for s in todo:
        if s not in alone:
            by_step[steps[id(s)], s.pack_with is None].append(s)
    for group in by_step.values():
        size = pack or _pack_size(len(group), _max_pack(ctx, group[0], train_cfg))
        for i in range(0, len(group), size):
            chunk = group[i:i + size]
            try:
                while len(chunk) > 1:  # repack what is left when some trials converge (patience)
                    chunk = _train_pack(ctx, chunk, train_cfg, keep_best)
                alone.extend(chunk)
            except PackError as e:
                print(f"note: training {len(chunk)} trials alone ({e})", flush=True)
                alone.extend(chunk)
    for s in alone:
        _train_alone(ctx, s, train_cfg, keep_best)


def _restart_split_pack(specs: list[TrialSpec], steps: dict[int, int]) -> None:
    """A kill between the checkpoint writes of one pack leaves its trials at different steps.
    Resumed apart they would train alone, which matches packed training only to float
    precision: so they restart from step 0 together, as they first ran (at most one pack's
    progress is lost, and the numbers stay exactly those of an uninterrupted run)."""
    started = {steps[id(s)] for s in specs if steps[id(s)] > 0}
    if len(started) < 2:
        return
    print(f"note: {len(specs)} packed trials were stopped at different steps "
          f"({', '.join(map(str, sorted(started)))}); they restart from step 0 as one pack", flush=True)
    for s in specs:
        s.run.path("checkpoint.pt").unlink(missing_ok=True)
        steps[id(s)] = 0


MAX_PACK = 16  # LeNet on 2 CPU cores: 8-16 trials per pack are fastest, 38 slower (benchmark)
# On a CPU a pack keeps its speed per trial while its largest activation (batch x K trials x
# one layer's output, fp32) stays well inside the cache: vgg_narrow at batch 128 (6.4 MB per
# trial in its first conv) trained at 1.0x one trial alone packed 2 (13 MB), 0.9x packed 3
# (19 MB), 0.7x packed 6; at half width (3.2 MB per trial) 1.4-1.5x packed 4 to 6 (13-19 MB),
# 1.2x packed 9 (29 MB), 1.05x packed 12. 2-core AMD EPYC with a 32 MB L3, channels_last,
# interleaved; `make benchmark` measures it ("Packed trials, vgg_narrow").
PACK_CACHE_BYTES = 16e6


def _pack_size(n: int, most: int = MAX_PACK) -> int:
    """Trials per pack when --pack is 0: all of them, in equal packs of at most `most`."""
    packs = -(-n // max(1, most))
    return -(-n // packs)


def largest_activation(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Elements of the largest output of any of `model`'s layers, per input row."""
    sizes = [0]

    def record(_m, _i, out):
        sizes.append(out[0].numel() if torch.is_tensor(out) else 0)

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return max(sizes)


def pack_limit(build: Callable[[], nn.Module], input_shape: Sequence[int], batch_size: int,
               device: torch.device | str) -> int:
    """The most trials of `build`'s model one pack holds: MAX_PACK, and on a CPU no more than keep
    the pack's largest activation within PACK_CACHE_BYTES (the model is built only then)."""
    if torch.device(device).type != "cpu":
        return MAX_PACK
    with torch.random.fork_rng(devices=[]):  # a build seeds the global generator: keep its state
        model = build()
    per_trial = 4 * batch_size * largest_activation(model, input_shape)
    return max(1, min(MAX_PACK, int(PACK_CACHE_BYTES // per_trial)))


def _max_pack(ctx: Context, spec: TrialSpec, cfg: TrainConfig) -> int:
    """`pack_limit` for the trials of `spec`'s kind in this experiment."""
    return pack_limit(spec.build, ctx.data.input_shape, cfg.batch_size, ctx.device)


def _checkpoint_step(run: Run) -> int:
    state = read_checkpoint(run.path("checkpoint.pt"), "cpu")  # an unreadable one is moved aside
    return 0 if state is None else int(state["step"])


def _train_alone(ctx: Context, s: TrialSpec, cfg: TrainConfig, keep_best: bool) -> dict:
    def hooks_for(model):
        hooks = [s.mask.hook(model, s.fill)] if s.mask is not None else []
        return hooks + list(s.hooks_for(model) if s.hooks_for else ())

    return ctx.train(s.run, stage=s.stage, name=s.name, seed=s.seed, train_cfg=cfg,
                     build=s.build, hooks_for=hooks_for, keep_best=keep_best, after=s.after)


def _train_pack(ctx: Context, specs: list[TrialSpec], cfg: TrainConfig,
                keep_best: bool) -> list[TrialSpec]:
    """Train `specs` as one pack; finish every trial that ended, return those handed back
    unfinished (with `cfg.patience`, when others converged first)."""
    models = [s.build() for s in specs]
    if specs[0].pack_with is not None:
        net = specs[0].pack_with(models)  # PackError: the caller trains them alone
    else:
        net = PackedNet(models, ctx.data.input_shape)
    for s in specs:
        s.run.start()
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(TrialLog(s.run.dir, experiment=ctx.experiment, stage=s.stage,
                                             scale=ctx.scale, name=s.name,
                                             config=flat_config(s.run.cfg), config_hash=s.run.hash))
                for s in specs]
        results = train_packed(net, ctx.data, cfg, seeds=[s.seed for s in specs],
                               masks=[dict(s.mask) if s.mask is not None else None for s in specs],
                               fills=[s.fill for s in specs],
                               checkpoints=[s.run.path("checkpoint.pt") for s in specs],
                               logs=logs, keep_best=keep_best, desc=f"pack of {len(specs)}",
                               metrics=(lambda: net.metrics(ctx.data)) if hasattr(net, "metrics") else None)
        for k, (s, res, tlog) in enumerate(zip(specs, results, logs)):
            if res.unfinished:  # its checkpoint holds it; its wandb run resumes next time
                continue
            model = models[k]
            model.load_state_dict(net.state(k))
            summary = {**res.summary(), "pack_size": len(specs)}
            summary.update((s.after(model, res) if s.after else None) or {})
            tlog.finish(summary)
            s.run.finish({**summary, "run": s.run.hash})
            s.run.path("checkpoint.pt").unlink(missing_ok=True)
            provenance.CURRENT.trained_trial(s.run.hash)
    return [s for s, res in zip(specs, results) if res.unfinished]
