"""Random command lines for every experiment (hypothesis): each either parses into a config that
runs, or exits 2 with exactly one line on stderr; never a traceback.

Parsing is in-process (`Experiment.parse_args`: flags, preset, every validate), 250 cases per
experiment; a handful of valid lines then run end to end at the smallest size, where a line
that parsed may still be refused before compute (exit 2, one line) but never crash.
"""
from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultkit
from experiments.cli import SCALES
from lib import data, models

EXPERIMENTS = ["compression_pipeline", "feature_kd", "filter_importance", "logit_kd",
               "lottery_ablation", "lottery_ticket", "network_slimming", "quantization",
               "rethinking_pruning", "rkd"]
CASES = 215  # >= 200 after the few --help spellings are skipped
NAMES = [*SCALES, *models.MODELS, *data.DATASETS, "cpu", "cuda", "auto", "sgd", "adam", "ticket",
         "reinit", "random_mask", "large_final", "random", "rewind", "zero", "l1", "l2", "fpgm",
         "kd", "dml", "ban", "fitnet", "at", "rkd_d", "minmax", "mse", "oneshot", "iterative",
         "criteria", "mask0", "layerwise", "global", "slimming", "unstructured", "ptq", "qat"]
NUMBERS = ["0", "1", "2", "3", "-1", "7", "40", "0.5", "0.99", "1.0", "1e-3", "1e4", "-0.5",
           "nan", "inf", "-inf", "1e400", "99999999999999999999", "0x10", "1_000", "", " "]


def values() -> st.SearchStrategy[str]:
    one = st.sampled_from(NAMES + NUMBERS)
    return st.one_of(one, one, one, st.lists(one, min_size=1, max_size=4).map(",".join),
                     st.text(max_size=12), st.integers(-10**6, 10**6).map(str),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr))


def argv_for(experiment) -> st.SearchStrategy[list[str]]:
    options = [s for a in experiment.parser()._actions for s in a.option_strings
               if s not in ("-h", "--help")]
    flag = st.one_of(st.sampled_from(options), st.sampled_from(["--nope", "-x", "--scale=smoke", "positional"]))
    pair = st.tuples(flag, values()).map(list)
    return st.tuples(st.sampled_from([["--scale", "smoke"], ["--scale", "smoke"], []]),
                     st.lists(st.one_of(pair, pair, pair, flag.map(lambda f: [f])), max_size=4)).map(
        lambda t: t[0] + [tok for part in t[1] for tok in part])


def is_help(argv: list[str]) -> bool:
    """Tokens argparse reads as --help (its abbreviations, -h clusters): they exit 0 by design."""
    return any(t.startswith("-h") or (len(t) > 2 and "--help".startswith(t.split("=")[0]))
               for t in argv)


def check_one(experiment, argv: list[str], capsys) -> bool:
    """True when `argv` parses; else it must have exited 2 with one stderr line."""
    capsys.readouterr()
    try:
        experiment.parse_args(argv)
        return True
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
        return False


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_random_command_lines_parse_or_fail_in_one_line(name, capsys):
    experiment = importlib.import_module(f"experiments.{name}.__main__").EXPERIMENT
    outcomes = []

    @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv_for(experiment))
    def case(argv):
        if is_help(argv):
            return
        outcomes.append(check_one(experiment, argv, capsys))

    case()
    assert len(outcomes) >= 200, len(outcomes)
    assert 0 < sum(outcomes) < len(outcomes)  # both kinds met: the fuzz reaches valid configs


# valid lines found by the fuzz, at the smallest size: each runs, or stops in one line
END_TO_END = [
    ["--scale", "smoke", "--iterations", "2", "--seeds", "1", "--levels", "1", "--pack", "1"],
    ["--scale", "smoke", "--iterations", "3", "--seeds", "1", "--levels", "0", "--lr", "1e4",
     "--optimizer", "sgd"],
    ["--scale", "smoke", "--iterations", "2", "--seeds", "1", "--levels", "1",
     "--variants", "ticket,random_mask", "--rewind-step", "1", "--eval-every", "1"],
    ["--scale", "smoke", "--epochs", "0.01", "--seeds", "1", "--levels", "0", "--batch-size", "1999"],
]


@pytest.mark.smoke
@pytest.mark.parametrize("argv", END_TO_END, ids=range(len(END_TO_END)))
def test_valid_lines_run_end_to_end(argv, tmp_path):
    res = faultkit.run(tmp_path, argv)
    assert "Traceback" not in res.output, res.output
    assert res.code == 0 or (res.code == 2 and len(res.stderr_lines) == 1), res.output
