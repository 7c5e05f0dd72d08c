"""Launchers and claims (issue #15): the run folder's claim is atomic, kept alive by a heartbeat
and taken over when stale; `--launcher local` and `--launcher slurm` (submitit's LocalExecutor)
train a smoke grid whose union equals the inline run's, no trial trained twice; two inline runs
started at once in one checkout end with one complete, correct table."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cli import ROOT, invocation_records, lab_env
from experiments import launch
from experiments.trial import Policy
from lib.runs import CLAIMS, Claim

GRID = ["--scale", "smoke", "--levels", "1", "--seeds", "2"]  # 6 trials, two levels
NUMBERS = ["run", "seed", "level", "variant", "weights_left", "test_acc", "val_acc",
           "final_test_acc", "early_stop_iter"]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def fake_claim(run_dir: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = run_dir / "claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": f"{host}:{pid}:x"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_claim_is_exclusive_and_released(tmp_path):
    a, b = Claim(tmp_path), Claim(tmp_path)
    assert a.acquire() and not b.acquire()
    info = b.owner()
    assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
    b.release()  # not b's: stays
    assert a.mine()
    a.release()
    assert b.acquire() and b.mine()


def test_a_dead_owner_on_this_host_is_taken_over_at_once(tmp_path, capsys):
    fake_claim(tmp_path, socket.gethostname(), dead_pid())
    claim = Claim(tmp_path)
    assert claim.acquire() and claim.mine()
    assert "is stale" in capsys.readouterr().err


def test_another_hosts_claim_is_stale_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CLAIM_STALE_S", "5")
    fake_claim(tmp_path, "elsewhere", 1, age_s=1)
    assert not Claim(tmp_path).acquire()  # heartbeat 1 s ago: alive
    fake_claim(tmp_path, "elsewhere", 1, age_s=6)
    assert Claim(tmp_path).acquire()


def test_a_takeover_that_meets_a_fresh_claim_puts_it_back(tmp_path):
    fresh = Claim(tmp_path)
    assert fresh.acquire()
    Claim(tmp_path)._take_over({"token": "an-older-stale-one", "age_s": 999})
    assert fresh.mine()


def test_held_claims_keep_their_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CLAIM_STALE_S", "0.3")
    with CLAIMS.hold(tmp_path) as mine:
        assert mine
        with CLAIMS.hold(tmp_path) as again:  # re-entrant in one process
            assert again
        time.sleep(0.5)
        info = Claim(tmp_path).owner()
        assert info is not None and info["age_s"] < 0.3 and not Claim.is_stale(info)
    assert not (tmp_path / "claim").exists()


def test_workers_share_a_list_without_overlap():
    items = list(range(7))
    taken: set[int] = set()
    shares = []
    for k in range(3):
        policy = Policy()
        policy.worker = (k, 3)

        def take(i):
            if i in taken:
                return False
            taken.add(i)
            return True
        shares.append(policy.share(items, take))
    assert [len(s) for s in shares] == [3, 3, 1] and sorted(sum(shares, [])) == items
    assert all(s == sorted(s) for s in shares)


def test_local_workers_share_the_cores_within_the_users_thread_cap(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [launch.worker_threads(j) for j in (1, 4, 32)] == [16, 4, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert [launch.worker_threads(j) for j in (1, 4, 16)] == [2, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert launch.worker_threads(4) == 4


def test_worker_command_drops_the_launching_options():
    argv = ["--scale", "smoke", "--launcher", "slurm", "--jobs=3", "--slurm-partition", "gpu",
            "--levels", "1", "--wandb-artifacts"]
    assert launch.worker_argv(argv, 1, 3) == ["--scale", "smoke", "--levels", "1", "--worker", "1/3"]


def run_lottery(base: Path, *args: str, **kw) -> subprocess.Popen:
    # one thread everywhere: CPU sums are ordered by thread, so numbers compare at equal threads
    env = {**lab_env(base, wandb=False), "LAB_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", **kw.get("env", {})}
    return subprocess.Popen([sys.executable, *kw.get("python", []), "-m", "experiments.lottery_ticket",
                             *GRID, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return out + err


def outcome(base: Path) -> tuple[pd.DataFrame, list[str]]:
    """(the table's numbers by trial hash, every trial hash each invocation trained)."""
    trials = pd.read_csv(base / "results" / "lottery_ticket" / "smoke" / "trials.csv")
    trained = [h for rec in invocation_records(base) for h in json.loads(rec.read_text())["trained"]]
    return trials[NUMBERS].sort_values("run").reset_index(drop=True), trained


@pytest.mark.smoke
def test_local_and_slurm_workers_equal_two_concurrent_inline_runs(tmp_path):
    # two inline runs started at once in one checkout (one of them shows it never imports submitit)
    same = tmp_path / "inline"
    first = run_lottery(same, python=["-X", "importtime"])
    second = run_lottery(same)
    assert "submitit" not in finish(first) and finish(second)
    inline, trained = outcome(same)
    assert len(inline) == 6 and sorted(trained) == sorted(inline.run)  # each trained once
    for launcher, extra, env in [("local", [], {}),
                                 ("slurm", ["--slurm-cpus-per-task", "1", "--slurm-time", "5"],
                                  {"LAB_SUBMITIT_CLUSTER": "local"})]:
        base = tmp_path / launcher
        log = finish(run_lottery(base, "--launcher", launcher, "--jobs", "2", *extra, env=env))
        table, trained = outcome(base)
        pd.testing.assert_frame_equal(table, inline)
        assert sorted(trained) == sorted(inline.run), log  # no trial trained twice
        records = [json.loads(r.read_text())["command"] for r in invocation_records(base)]
        assert sorted(c.split()[-1] for c in records) == ["0/2", "1/2"], log  # both workers trained
        assert list((base / "runs" / "smoke" / "lottery_ticket" / launcher).iterdir()), launcher
