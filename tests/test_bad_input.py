"""Every experiment's bad input: one `error: ...` line on stderr, exit status 2, nothing written,
before any compute. In-process for every case (fast); through the real command line for one
case per experiment."""
from __future__ import annotations

import pytest

from cli import ROOT, assert_rejected, assert_rejected_subprocess
from experiments.rkd.config import METHODS as RKD_METHODS

# per experiment: (arguments after `--scale smoke`, a fragment of the one stderr line)
BAD_INPUT = {
    "compression_pipeline": [
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--scale", "x"), "scale: unknown 'x'"),
        (("--criterion", "biggest"), "prune.criterion: unknown 'biggest'"),
        (("--ratio", "1.0"), "prune.ratio: must be in (0, 1), got 1.0"),
        (("--calibration", "best"), "calibration: unknown 'best'"),
        (("--budget", "0"), "budget: must be in (0, 1], got 0.0"),  # teacher, finetune, qat too
        (("--model", "conv2", "--criterion", "apoz"),  # conv2: not surgery's, cut by DepGraph
         "prune.criterion: 'apoz' is not available for models pruned through DepGraph"),
        (("--model", "resnet8"),  # prunable, but its BN cannot be folded for int8
         "model resnet8: fold_bn: bn1 (BatchNorm2d) does not follow a Conv2d"),
    ],
    "feature_kd": [
        (("--methods", "at,nope"), "methods: unknown 'nope', choose from student, kd"),
        (("--model", "lenet_300_100"), "layers: student and teacher share no feature-map size"),
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--scale", "x"), "scale: unknown 'x'"),
        (("--set", "at_weight=strong"), "set: at_weight must be a float, got 'strong'"),
    ],
    "filter_importance": [
        (("--set", "finetune.epoch=6"), "set: unknown field 'finetune.epoch'"),
        (("--set", "finetune.epochs=-1"), "iterations/epochs: must be >= 0, got 0/-1.0"),
        (("--criteria", "l1,nope"), "criteria: unknown 'nope'"),
        (("--ratios", "0.3,0.99"),
         "ratio: pruning 0.99 of layer 'features.0' (16 channels) leaves none"),
        (("--ratios", "0"), "ratios: each must be in (0, 1), got 0.0"),
        (("--layers", "features.8,features.99"), "layers: features.99: give distinct prunable layers"),
        (("--layers", "features.8,features.8"), "layers: a layer listed twice"),
        (("--layers", " , "), "layers: empty list; name prunable layers"),
        (("--ratios", "half"), "ratios: expected comma-separated numbers, got 'half'"),
        (("--model", "conv2"), "surgery: unsupported model type 'ConvNet'"),
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--scale", "x"), "scale: unknown 'x'"),
    ],
    "logit_kd": [
        (("--methods", "kd,nope"), "methods: unknown 'nope', choose from kd, dml, ban, lr, ta"),
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--assistant", "nope"), "model: unknown 'nope'"),
        (("--scale", "paper", "--model", "resnet8", "--methods", "ta"), "ta_student: none set"),
        (("--ta-student", "nope"), "model: unknown 'nope'"),
        (("--ta-student", "lenet_300_100"), "ta_student: must differ from the assistant"),
        (("--seeds", "0"), "seeds: must be >= 1"),
        (("--set", "select=last"), "select: unknown 'last', choose from best, final"),
        (("--scale", "default", "--methods", "ban", "--set", "select=final"),
         "select: 'final' means the end of the schedule; set train.patience=0 (got 5"),
        (("--set", "select=final"), "select: 'final' is not implemented for dml"),
    ],
    "lottery_ablation": [
        (("--criteria", "large_final,biggest"), "error: criteria: unknown 'biggest', choose from"),
        (("--ablations", "flip"), "error: ablations: unknown 'flip', choose from"),
        (("--mask0", "one"), "error: mask0: unknown 'one', choose from"),
        (("--studies", "all"), "error: studies: unknown 'all', choose from"),
        (("--levels", "0"), "error: levels: need pruning levels >= 1, got [0]"),
        (("--mode", "twoshot"), "error: mode: unknown 'twoshot', choose from"),
        (("--levels", "a,b"), "error: levels: expected comma-separated integers, got 'a,b'"),
        (("--rate-fc", "1.0"), "error: rate_fc: must be in [0, 1), got 1.0"),
        (("--levels", "3,50"), "levels: at most 46 for lenet_300_100"),
    ],
    "lottery_ticket": [
        (("--scale", "huge"), "error: scale"),
        (("--levels", "-1"), "error: levels"),
        (("--model", "vgg99"), "error: model"),
        (("--variants", "ticket,lucky"), "error: variants"),
        (("--dataset", "svhn"), "error: dataset"),
        (("--optimizer", "lion"), "error: optimizer"),
        (("--scope", "net"), "error: scope"),
        (("--rate-fc", "1.0"), "error: rate_fc: must be in [0, 1), got 1.0"),
        (("--seeds", "two"), "error: argument --seeds: invalid int value"),
        (("--pack", "-1"), "error: pack: must be >= 0, got -1"),
        # impossible requests (issue #16): refused before any compute, naming the limit
        (("--levels", "60"), "levels: at most 46 for lenet_300_100 at these pruning rates "
                             "(level 47 leaves net.3.weight with no weight), got 60"),
        (("--rewind-step", "120"), "rewind_step: must be < the 120 training steps, got 120"),
        (("--batch-size", "2001"), "batch_size: must be <= 2000, the training images, got 2001"),
        (("--seeds", "0"), "seeds: must be >= 1, got 0"),
        (("--lr", "inf"), "lr: must be finite, got inf"),
        (("--epochs", "1e400"), "epochs: must be finite, got inf"),
        (("--dataset", "synthetic", "--scale", "default"),
         "val_size: must be in [0, 3000) (synthetic has 3000 training images), got 5000"),
        (("--val-size", "-1"), "val_size: must be in [0, 60000)"),
        (("--train-limit", "-5"), "train_limit/test_limit: must be >= 0, got (-5, 1000)"),
        (("--train-limit", "100", "--batch-size", "128"),
         "batch_size: must be <= 100, the training images, got 128"),
        # launchers (issue #15): nothing submitted or written
        (("--launcher", "local", "--jobs", "0"), "jobs: must be >= 1, got 0"),
        (("--launcher", "cloud"), "launcher: unknown 'cloud', choose from inline, local, slurm"),
        (("--launcher", "slurm", "--slurm-partion", "gpu"), "unrecognized arguments: --slurm-partion"),
        (("--slurm-partition", "gpu"), "slurm_partition: needs --launcher slurm"),
        (("--jobs", "2"), "jobs: needs --launcher local or slurm"),
    ],
    "network_slimming": [
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--model", "lenet_300_100"), "criterion: 'bn_gamma' needs a BatchNorm"),
        (("--ratios", "0.3,1.0"), "ratio: must be in [0, 1)"),
        (("--ratios", "0.97"), "ratio: 0.97 prunes"),
        (("--lams", "0,1e-3"), "lams: each λ must be > 0"),
        (("--lams", "abc"), "lams: expected comma-separated numbers"),
        (("--min-keep", "0"), "min_keep: must be"),
        (("--scale", "huge"), "scale: unknown 'huge'"),
        (("--epochs", "-1"), "iterations/epochs: must be >= 0, got 0/-1.0"),
    ],
    "quantization": [
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--scale", "x"), "scale: unknown 'x'"),
        (("--seeds", "0"), "seeds: must be >= 1, got 0"),
        (("--lr", "-1"), "lr: must be > 0, got -1"),
        (("--dataset", "svhn"), "dataset: unknown 'svhn'"),
        (("--conv-model", "nope"), "conv_model: must be a registered model or none"),
        (("--conv-model", "lenet_300_100"), "conv_model: must be a model other than --model"),
        (("--conv-model", "resnet8"), "model resnet8: fold_bn: bn1 (BatchNorm2d) does not follow"),
        (("--model", "resnet8", "--conv-model", "none"), "model resnet8: fold_bn: bn1"),
        (("--qat-bits", "w4"), "qat_bits: expected WkAk pairs like w8a8,w4a8 or none, got 'w4'"),
        (("--qat-bits", "w4a8,"), "qat_bits: expected WkAk pairs"),
        (("--qat-bits", "w1a8"), "qat_bits: must be (weight, activation) bit pairs, each in"),
        (("--qat-bits", "w4a8,W4A8"), "qat_bits: a pair is repeated"),
    ],
    "rethinking_pruning": [
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--model", "conv2"), "model: 'conv2' is not supported by channel surgery"),
        (("--model", "lenet_300_100"), "model: 'lenet_300_100' has no BatchNorm"),
        (("--l1-ratios", "1.0"), "l1_ratios: each must be in (0, 1), got 1.0"),
        (("--l1-ratios", "0.97"),
         "l1_ratios: ratio: pruning 0.97 of layer 'features.0' (16 channels) leaves none"),
        (("--slimming-ratios", "0.99"), "slimming_ratios: ratio: 0.99 prunes 174 of 176 channels"),
        (("--lottery-lrs", "x"), "lottery_lrs: expected comma-separated numbers"),
        (("--lam", "-1"), "lam: must be >= 0, got -1.0"),
        (("--seeds", "0"), "seeds: must be >= 1, got 0"),
        (("--methods", "l1,nope"), "methods: unknown 'nope', choose from l1, slimming, unstructured"),
        (("--lottery-methods", "slimming"),
         "lottery_methods: unknown 'slimming', choose from l1, unstructured"),
    ],
    "rkd": [
        (("--methods", "rkd_d,nope"), "methods: unknown 'nope', choose from " + ", ".join(RKD_METHODS)),
        (("--model", "lenet_300_100"), "model: lenet_300_100 has no global pool"),
        (("--model", "nope"), "model: unknown 'nope'"),
        (("--scale", "x"), "scale: unknown 'x'"),
        (("--dataset", "svhn"), "dataset: unknown 'svhn'"),
        (("--lr", "-1"), "lr: must be > 0"),
    ],
}

# one case per experiment through `python -m experiments.<name>`
COMMAND_LINE = {
    "compression_pipeline": (("--ratio", "1.0"), "prune.ratio: must be in (0, 1), got 1.0"),
    "feature_kd": (("--methods", "at,nope"), "methods: unknown 'nope'"),
    "filter_importance": (("--criteria", "l1,nope"), "criteria: unknown 'nope'"),
    "logit_kd": (("--methods", "kd,nope"), "methods: unknown 'nope'"),
    "lottery_ablation": (("--mode", "twoshot"), "mode: unknown 'twoshot'"),
    "lottery_ticket": (("--levels", "-1"), "levels: must be >= 0"),
    "network_slimming": (("--lams", "0"), "lams: each λ must be > 0"),
    "quantization": (("--model", "nope"), "model: unknown 'nope'"),
    "rethinking_pruning": (("--l1-ratios", "1.0"), "l1_ratios: each must be in (0, 1), got 1.0"),
    "rkd": (("--methods", "nope"), "methods: unknown 'nope'"),
}


def cases(table: dict[str, list]) -> list:
    """(name, args, msg) params, each with the id `<name>:<args>`."""
    return [pytest.param(name, args, msg, id=f"{name}:{' '.join(args)}")
            for name, rows in table.items() for args, msg in rows]


def test_every_experiment_has_its_cases():
    experiments = {p.parent.name for p in (ROOT / "experiments").glob("*/__main__.py")}
    assert set(BAD_INPUT) == set(COMMAND_LINE) == experiments


@pytest.mark.parametrize("name, args, msg", cases(BAD_INPUT))
def test_bad_input_fails_in_one_line_before_compute(name, args, msg, tmp_path, capsys):
    assert_rejected(name, args, msg, tmp_path, capsys)


@pytest.mark.parametrize("name, args, msg", cases({n: [c] for n, c in COMMAND_LINE.items()}))
def test_bad_input_exits_2_from_the_command_line(name, args, msg, tmp_path):
    assert_rejected_subprocess(name, args, msg, tmp_path)


def test_slurm_without_sbatch_fails_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    monkeypatch.delenv("LAB_SUBMITIT_CLUSTER", raising=False)
    assert_rejected("lottery_ticket", ("--launcher", "slurm", "--jobs", "4"),
                    "launcher: slurm needs `sbatch` on PATH", tmp_path / "out", capsys)


def test_set_changes_one_field_by_name_or_dotted_path():
    from experiments.cli import set_field
    from experiments.filter_importance.config import for_scale as filters
    from experiments.logit_kd.config import for_scale as logit
    from experiments.rkd.config import for_scale as rkd

    cfg = set_field(set_field(logit("default"), "alpha=0.5"), "T=1")
    assert (cfg.alpha, cfg.T) == (0.5, 1.0) and logit("default").alpha == 0.9
    assert set_field(filters("default"), "finetune.epochs=6").finetune.epochs == 6.0
    smoke = set_field(filters("smoke"), "finetune.epochs=6").finetune  # clears its iterations
    assert (smoke.epochs, smoke.iterations) == (6.0, 0)
    assert set_field(rkd("default"), "w_sp=750").setup.w_sp == 750.0  # a field of the setup
    assert set_field(logit("default"), "train.channels_last=true").setup.train.channels_last
    for bad, msg in [("alpha", "must be path=value"), ("setup=1", "not a single value"),
                     ("methods=kd", "not a single value"), ("seeds=two", "seeds must be a int")]:
        with pytest.raises(ValueError, match=msg):
            set_field(logit("default"), bad)
