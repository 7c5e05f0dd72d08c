"""Filter importance at equal MACs: l1, l2, fpgm, apoz, bn_gamma and random filter pruning.

    python -m experiments.filter_importance --scale smoke|default|paper [--seeds N]
        [--model vgg_narrow|vgg16|resnet56|...] [--criteria l1,fpgm] [--ratios 0.3,0.6]

For each seed: train the baseline once (stage "baseline", final weights saved as final.pt).
Then for every criterion and every per-layer prune ratio r: score the filters of every
prunable layer with the criterion, remove the r lowest-scoring fraction of each layer
physically (`prune_structured`), evaluate right away (stage "pruned", the smaller model saved
with `save_pruned`) and fine-tune it briefly (stage "finetuned"). One ratio gives one
architecture whatever the criterion, so all criteria are compared at equal parameters and
MACs. Trials live in runs/filter_importance/<hash>/; finished ones are reused. Outputs:
results/filter_importance/<scale>/.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from experiments.common import (Stopwatch, add_train_args, base_parser, fail, load_data, machine,
                                parse_list, pick_device, preset, run_eval, run_trial)
from experiments.filter_importance.config import CRITERIA, FilterConfig, Trial, for_scale
from experiments.filter_importance.report import write_report
from lib import models
from lib.metrics import count_macs, count_params, latency_ms, size_bytes
from lib.prune.structured import prune_structured
from lib.prune.surgery import load_pruned, save_pruned
from lib.runs import Run, atomic_torch_save

EXPERIMENT = "filter_importance"


def parse_ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"ratios: not a comma-separated list of numbers: '{text}'") from None


def parse_args(argv=None) -> tuple[FilterConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    p.add_argument("--model", default=None,
                   help="a model surgery supports: vgg_* / vgg11/16/19, resnet8/20/56, lenet_300_100 "
                        "(default: vgg_narrow; vgg16 at the paper scale)")
    p.add_argument("--dataset", default=None, help="override the scale's dataset")
    p.add_argument("--criteria", default=None, help=f"comma-separated, from {', '.join(CRITERIA)}")
    p.add_argument("--ratios", default=None,
                   help="comma-separated fractions of filters removed from every layer, e.g. 0.3,0.6")
    add_train_args(p)  # they change the baseline's recipe
    a = p.parse_args(argv)
    if a.model is None:
        a.model = "vgg16" if a.scale == "paper" else "vgg_narrow"
    try:
        scale, cfg = preset(a, for_scale)
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        if a.criteria is not None:
            cfg = replace(cfg, criteria=parse_list(a.criteria, CRITERIA, "criteria"))
        if a.ratios is not None:
            cfg = replace(cfg, ratios=parse_ratios(a.ratios))
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


def describe(model, input_shape, batch) -> dict:
    """Size and cost of `model`: parameters, MACs, bytes, CPU latency on `batch`."""
    cpu = model.cpu().eval()
    return {"params": count_params(cpu), "macs": count_macs(cpu, input_shape),
            "size_bytes": size_bytes(cpu), "latency_ms": latency_ms(cpu, batch)}


def run_seed(cfg: FilterConfig, seed: int, data, scale: str, device) -> list[dict]:
    setup = cfg.setup
    batch = data.test_x[:cfg.latency_batch].cpu()

    def fresh():
        torch.manual_seed(seed)
        return models.build(setup.model, data.input_shape, data.num_classes).to(device)

    # ---- the baseline, trained once per seed
    base_run = Run(EXPERIMENT, Trial(setup, seed), scale=scale)
    res = run_trial(base_run, experiment=EXPERIMENT, stage="train", scale=scale,
                    name=f"s{seed}-baseline", seed=seed, data=data, train_cfg=setup.train,
                    build=fresh, after=lambda m, r: atomic_torch_save(
                        m.state_dict(), base_run.path("final.pt")))
    base = fresh()
    base.load_state_dict(torch.load(base_run.path("final.pt"), map_location=device,
                                    weights_only=True))
    base.eval()
    dense = describe(base, data.input_shape, batch)
    base.to(device)
    rows = [{**res, **dense, "method": "dense", "stage": "baseline", "prune_ratio": 0.0,
             "early_stop_test_acc": res["test_acc"], "test_acc": res["final_test_acc"],
             "val_acc": res["final_val_acc"]}]
    apoz_x = data.train_x[:cfg.apoz_samples]

    for ratio in cfg.ratios:
        for crit in cfg.criteria:
            common = dict(setup=setup, seed=seed, criterion=crit, prune_ratio=ratio,
                          apoz_samples=cfg.apoz_samples if crit == "apoz" else 0)
            pruned_run = Run(EXPERIMENT, Trial(stage="pruned", **common), scale=scale)
            name = f"s{seed}-{crit}-r{ratio:g}"
            measured: dict = {}

            def surgery(crit=crit, ratio=ratio, pruned_run=pruned_run, measured=measured):
                model, _ = prune_structured(base, crit, ratio, x=apoz_x, seed=seed)
                measured.update(describe(model, data.input_shape, batch))
                save_pruned(model, pruned_run.path("pruned.pt"))
                return model.to(device)

            r = run_eval(pruned_run, experiment=EXPERIMENT, scale=scale, name=f"{name}-pruned",
                         data=data, build=surgery, extra=measured, stage="prune")
            rows.append({**r, "method": crit, "stage": "pruned", "prune_ratio": ratio})

            def load(pruned_run=pruned_run, surgery=surgery):
                path = pruned_run.path("pruned.pt")
                return load_pruned(path, map_location=str(device)) if path.exists() else surgery()

            ft = Trial(stage="finetuned", finetune=cfg.finetune, **common)
            f = run_trial(Run(EXPERIMENT, ft, scale=scale), experiment=EXPERIMENT,
                          stage="finetune", scale=scale, name=f"{name}-finetuned", seed=seed,
                          data=data, train_cfg=cfg.finetune, build=load)
            rows.append({**f, "method": crit, "stage": "finetuned", "prune_ratio": ratio,
                         **{k: r[k] for k in ("params", "macs", "size_bytes")},
                         "early_stop_test_acc": f["test_acc"], "test_acc": f["final_test_acc"],
                         "val_acc": f["final_val_acc"]})
            print(f"{name:>22}: {r['params']} params, {r['macs']} MACs; test acc pruned "
                  f"{r['test_acc']:.4f}, fine-tuned {f['final_test_acc']:.4f}", flush=True)
    for row in rows:
        row["seed"] = seed
        row["params_reduction"] = 1 - row["params"] / dense["params"]
        row["macs_reduction"] = 1 - row["macs"] / dense["macs"]
        row["dense_test_acc"] = rows[0]["test_acc"]
    return rows


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    rows = [row for seed in range(cfg.seeds) for row in run_seed(cfg, seed, data, scale, device)]
    out = write_report(cfg, rows, scale, wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
