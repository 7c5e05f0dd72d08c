"""Filter importance at equal MACs: l1, l2, fpgm, apoz, bn_gamma and random filter pruning.

    python -m experiments.filter_importance --scale smoke|default|paper [--seeds N]
        [--model vgg_narrow|vgg16|resnet56|...] [--criteria l1,fpgm] [--ratios 0.3,0.6]
        [--layers features.8,features.11] [--sensitivity]

For each seed: train the baseline once (stage "baseline", final weights saved as final.pt).
Then for every criterion and every per-layer prune ratio r: score the filters of every
prunable layer with the criterion, remove the r lowest-scoring fraction of each layer
physically (`prune_structured`), evaluate right away (stage "pruned", the smaller model saved
with `save_pruned`) and fine-tune it briefly (stage "finetuned"). One ratio gives one
architecture whatever the criterion, so all criteria are compared at equal parameters and
MACs. With --layers only the listed layers are pruned (Li et al.'s choice of the layers that
are not sensitive); --sensitivity also prunes each layer alone, by l1 at 10%..90%, with no
retraining, and reports each one's validation accuracy (sensitivity.md/.csv/.png). Trials
live in runs/filter_importance/<hash>/; finished ones are reused. Outputs:
results/filter_importance/<scale>/.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


from experiments.common import Context, Experiment, each_seed, parse_floats, parse_list, lazy
from experiments.filter_importance.config import CRITERIA, FilterConfig, Trial, for_scale
from lib.metrics import count_macs, count_params, latency_ms, size_bytes
from lib.prune.structured import prune_structured
from lib.prune.surgery import load_pruned, save_pruned, widths
from lib.runs import atomic_write_text
from lib.train import evaluate

SENSITIVITY_RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def flags(p: argparse.ArgumentParser) -> None:
    """Which criteria, and how much of every layer they remove."""
    p.add_argument("--criteria", default=None, help=f"comma-separated, from {', '.join(CRITERIA)}")
    p.add_argument("--ratios", default=None,
                   help="comma-separated fractions of filters removed from every layer, e.g. 0.3,0.6")
    p.add_argument("--layers", default=None,
                   help="comma-separated prunable layers the ratios apply to (default: all), "
                        "e.g. features.8,features.11; the others keep every filter")
    p.add_argument("--sensitivity", action="store_true",
                   help="also prune each layer alone by l1 at 10%%..90%% of its filters, no "
                        "retraining, and write sensitivity.md/.csv/.png (Li et al.'s Fig. 2)")


def configure(cfg: FilterConfig, a: argparse.Namespace) -> FilterConfig:
    """`cfg` with --criteria / --ratios / --layers / --sensitivity applied (ValueError naming the
    field on a bad value)."""
    if a.criteria is not None:
        cfg = replace(cfg, criteria=parse_list(a.criteria, CRITERIA, "criteria"))
    if a.layers is not None:
        layers = tuple(n.strip() for n in a.layers.split(",") if n.strip())
        if not layers:  # the empty default means every layer; an empty flag is a mistake
            raise ValueError("layers: empty list; name prunable layers (e.g. features.8) or "
                             "leave --layers out to prune every layer")
        cfg = replace(cfg, layers=layers)
    if a.sensitivity:
        cfg = replace(cfg, sensitivity=True)
    return cfg if a.ratios is None else replace(cfg, ratios=parse_floats(a.ratios, "ratios"))


def describe(model, input_shape, batch) -> dict:
    """Size and cost of `model`: parameters, MACs, bytes, CPU latency on `batch`."""
    cpu = model.cpu().eval()
    return {"params": count_params(cpu), "macs": count_macs(cpu, input_shape),
            "size_bytes": size_bytes(cpu), "latency_ms": latency_ms(cpu, batch)}


def sensitivity(base, data, path: Path) -> list[dict]:
    """Li et al.'s sensitivity analysis: each prunable layer alone loses the lowest-L1 fraction r
    of its filters (r = 0.1 ... 0.9), no retraining; one row per (layer, r), with the pruned
    model's validation and test accuracy (the layers to prune are chosen on validation). Kept
    at `path` in the baseline's run folder, so a rerun reads it instead of pruning again."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or unreadable: compute it (again)
        pass
    rows = []
    for layer in widths(base):
        for r in SENSITIVITY_RATIOS:
            model, _ = prune_structured(base, "l1", {layer: r})
            _, val_acc = evaluate(model, data.val_x, data.val_y)
            _, test_acc = evaluate(model, data.test_x, data.test_y)
            rows.append({"method": "l1", "stage": "sensitivity", "layer": layer, "prune_ratio": r,
                         "val_acc": val_acc, "test_acc": test_acc,
                         "params": count_params(model), "macs": count_macs(model.cpu(), data.input_shape)})
    atomic_write_text(path, json.dumps(rows))
    return rows


def run_seed(ctx: Context, seed: int) -> list[dict]:
    """The baseline of `seed`, then every criterion at every ratio, pruned and fine-tuned."""
    cfg, setup, data, device = ctx.cfg, ctx.cfg.setup, ctx.data, ctx.device
    batch = data.test_x[:cfg.latency_batch].cpu()

    # ---- the baseline, trained once per seed
    base_run = ctx.run(Trial(setup, seed))
    base, res = ctx.train_final(base_run, model=setup.model, seed=seed, name=f"s{seed}-baseline",
                                train_cfg=setup.train)
    dense = describe(base, data.input_shape, batch)
    base.to(device)
    rows = [{**res, **dense, "method": "dense", "stage": "baseline", "prune_ratio": 0.0,
             "early_stop_test_acc": res["test_acc"], "test_acc": res["final_test_acc"],
             "val_acc": res["final_val_acc"]}]
    apoz_x = data.train_x[:cfg.apoz_samples]

    for ratio in cfg.ratios:
        for crit in cfg.criteria:
            common = dict(setup=setup, seed=seed, criterion=crit, prune_ratio=ratio,
                          apoz_samples=cfg.apoz_samples if crit == "apoz" else 0, layers=cfg.layers)
            pruned_run = ctx.run(Trial(stage="pruned", **common))
            name = f"s{seed}-{crit}-r{ratio:g}"
            measured: dict = {}

            def surgery(crit=crit, ratio=ratio, pruned_run=pruned_run, measured=measured):
                model, _ = prune_structured(base, crit, cfg.layer_ratios(ratio), x=apoz_x, seed=seed)
                measured.update(describe(model, data.input_shape, batch))
                save_pruned(model, pruned_run.path("pruned.pt"))
                return model.to(device)

            r = ctx.evaluate(pruned_run, name=f"{name}-pruned", build=surgery, extra=measured,
                             stage="prune")
            rows.append({**r, "method": crit, "stage": "pruned", "prune_ratio": ratio})

            def load(pruned_run=pruned_run, surgery=surgery):
                path = pruned_run.path("pruned.pt")
                return pruned_run.load("pruned.pt", str(device), load_pruned) if path.exists() else surgery()

            ft = Trial(stage="finetuned", finetune=cfg.finetune, **common)
            f = ctx.train(ctx.run(ft), stage="finetune", name=f"{name}-finetuned", seed=seed,
                          train_cfg=cfg.finetune, build=load)
            rows.append({**f, "method": crit, "stage": "finetuned", "prune_ratio": ratio,
                         **{k: r[k] for k in ("params", "macs", "size_bytes")},
                         "early_stop_test_acc": f["test_acc"], "test_acc": f["final_test_acc"],
                         "val_acc": f["final_val_acc"]})
            print(f"{name:>22}: {r['params']} params, {r['macs']} MACs; test acc pruned "
                  f"{r['test_acc']:.4f}, fine-tuned {f['final_test_acc']:.4f}", flush=True)
    if cfg.sensitivity:
        rows += sensitivity(base, data, base_run.path("sensitivity.json"))
    for row in rows:
        row["seed"] = seed
        row["params_reduction"] = 1 - row["params"] / dense["params"]
        row["macs_reduction"] = 1 - row["macs"] / dense["macs"]
        row["dense_test_acc"] = rows[0]["test_acc"]
    return rows


MODELS = {"smoke": "vgg_narrow", "default": "vgg_narrow", "paper": "vgg16"}
HELP = "a model surgery supports: vgg_*, vgg11/16/19, resnet8/20/56, lenet_300_100"
write_report = lazy("experiments.filter_importance.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment("filter_importance", __doc__, for_scale, each_seed(run_seed), write_report,
                        model=MODELS, model_help=HELP, flags=flags, configure=configure)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
