"""SIGKILL at random moments of a smoke grid, in every phase (training, checkpointing, finishing
a trial, writing the report): each rerun resumes, and the last one ends with results identical
to an uninterrupted run. Damaged run files, in finished and unfinished trials, are moved aside
and recomputed to the same numbers."""
from __future__ import annotations

import random

import pytest

import faultkit
from faultkit import baseline  # noqa: F401 - the fixture

pytestmark = pytest.mark.smoke
KILLS = 12


def test_kills_in_every_phase_end_with_identical_results(baseline, tmp_path):
    rng = random.Random(16)
    kills, phases, runs = 0, set(), 0
    while kills < KILLS:
        runs += 1
        assert runs <= 4 * KILLS, f"only {kills} kills landed in {runs} runs"
        fault = faultkit.random_fault(rng)
        res = faultkit.run(tmp_path, fault=fault)
        assert "Traceback" not in res.output, res.output
        assert faultkit.intact(tmp_path) == []
        if res.killed:
            kills += 1
            phases.add(fault["phase"])
        else:
            assert res.code == 0, res.output
            for f in tmp_path.glob("runs/smoke/lottery_ticket/*/done"):
                f.unlink()  # finished: start the grid over (results reused but for the markers)
    assert phases == {"training", "checkpoint", "finish", "report"}
    res = faultkit.run(tmp_path)
    assert res.code == 0, res.output
    assert faultkit.outcome(tmp_path) == baseline[1]  # identical: a resume is exact
    print(f"{kills} kills in {runs} runs ({sorted(phases)}), identical results")


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:len(data) // 2], "empty": b"",
                      "garbage": bytes(random.Random(0).randrange(256) for _ in range(300))}[how])


def _trials(base):
    import json

    runs = base / "runs" / "smoke" / "lottery_ticket"
    return {(c["level"], c["variant"]): p.parent for p in runs.glob("*/config.json")
            for c in [json.loads(p.read_text())]}


def test_damaged_files_of_finished_trials_are_recomputed(baseline, tmp_path):
    import shutil

    shutil.copytree(baseline[0] / "runs", tmp_path / "runs")
    by = _trials(tmp_path)
    # one damaged file per trial and round (a second one in the same trial is simply rewritten)
    rounds = [{by[(0, "ticket")] / "final.pt": "garbage", by[(1, "ticket")] / "metrics.csv": "truncate",
               by[(1, "reinit")] / "result.json": "truncate"},
              {by[(1, "reinit")] / "mask.pt": "empty", by[(0, "ticket")] / "result.json": "garbage"}]
    for damaged in rounds:
        for path, how in damaged.items():
            _damage(path, how)
        res = faultkit.run(tmp_path)
        assert res.code == 0 and "Traceback" not in res.output, res.output
        warnings = [ln for ln in res.output.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == len(damaged), warnings
        for path in damaged:
            assert any(str(path) in w and "moved to" in w for w in warnings), (path, warnings)
            assert path.with_name(path.name + ".corrupt").exists()
        faultkit.same(faultkit.outcome(tmp_path), baseline[1])


def test_damaged_files_of_unfinished_trials_are_recomputed(baseline, tmp_path):
    # killed as the first trial of the level-1 pack is about to be marked done: it has every
    # file but `done`; its pack mate has a checkpoint at the last step
    res = faultkit.run(tmp_path, fault={"site": "done", "nth": 2, "action": "before"})
    assert res.killed, res.output
    by = _trials(tmp_path)
    unfinished = [d for d in by.values() if not (d / "done").exists()]
    assert len(unfinished) == 2
    first = next(d for d in unfinished if (d / "result.json").exists())
    other = next(d for d in unfinished if d != first)
    for name, how in (("result.json", "truncate"), ("metrics.csv", "garbage"), ("mask.pt", "empty"),
                      ("final.pt", "garbage"), ("checkpoint.pt", "truncate")):
        if (first / name).exists():  # final.pt: the ticket's only
            _damage(first / name, how)
    _damage(other / "checkpoint.pt", "garbage")
    res = faultkit.run(tmp_path)
    assert res.code == 0 and "Traceback" not in res.output, res.output
    for d in (first, other):
        assert (d / "checkpoint.pt.corrupt").exists()
        assert f"warning: {d / 'checkpoint.pt'} cannot be read" in res.output
    faultkit.same(faultkit.outcome(tmp_path), baseline[1])
