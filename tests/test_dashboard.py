"""The experiment on the dashboard (issue #15): one `report` run per report, carrying the
trials table, the tables of means ± sd, every plot and the claims; `make sync` uploads the
offline runs (checked against a fake `wandb` executable on PATH: no network here)."""
from __future__ import annotations

import os
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cli import ROOT  # noqa: E402
from experiments.dashboard import markdown_tables, report_run  # noqa: E402
from wandb_records import finished_records, offline_runs  # noqa: E402

TABLE = """# Lottery ticket

| level | variant | test acc % |
|---:|:---|---|
| 0 | ticket | 81.5 ± 0.7 |
| 1 | reinit | 81.0 ± 0.3 |

Produced by 1 invocation.
"""


def test_markdown_tables_are_read_back():
    assert markdown_tables(TABLE) == [(["level", "variant", "test acc %"],
                                       [["0", "ticket", "81.5 ± 0.7"], ["1", "reinit", "81.0 ± 0.3"]])]


def test_the_report_run_holds_tables_plots_and_claims(tmp_path, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    pd.DataFrame({"run": ["abc123"], "level": [0], "test_acc": [0.815]}).to_csv(out / "trials.csv", index=False)
    (out / "table.md").write_text(TABLE)
    pd.DataFrame({"claim": ["c1"], "verdict": ["holds"]}).to_csv(out / "claims.csv", index=False)
    plt.plot([0, 1], [1, 0])
    plt.savefig(out / "test_acc.png")
    plt.close()
    trial = tmp_path / "runs" / "smoke" / "lottery_ticket" / "abc123"
    trial.mkdir(parents=True)
    (trial / "final.pt").write_bytes(b"weights")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    report_run("lottery_ticket", "smoke", out, artifacts=True)
    assert offline_runs(tmp_path) == []  # not a trial's run
    (run,) = offline_runs(tmp_path, reports=True)
    assert (run["run"].job_type, run["run"].run_group, list(run["run"].tags)) == \
        ("report", "lottery_ticket", ["smoke"])
    (logged,) = run["history"]
    kinds = {k[:-len("/_type")]: v for k, v in logged.items() if k.endswith("/_type")}
    assert kinds == {"trials": "table-file", "means": "table-file", "claims": "table-file",
                     "plots/test_acc": "image-file"}, logged
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert any(r.WhichOneof("record_type") == "artifact" for r in finished_records(path))


def test_make_sync_uploads_every_offline_run(tmp_path):
    fake = tmp_path / "bin" / "wandb"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    for name in ("offline-run-20260101_000000-a", "offline-run-20260101_000001-b"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    make = ["make", "-s", "-C", str(ROOT), "-o", "setup", "sync", "WANDB=wandb", f"WANDB_DIR={tmp_path}"]
    subprocess.run(make, env=env, check=True, capture_output=True)
    (call,) = (tmp_path / "calls").read_text().splitlines()
    assert call.split() == ["sync", "--include-offline", f"{tmp_path}/wandb/offline-run-20260101_000000-a",
                            f"{tmp_path}/wandb/offline-run-20260101_000001-b"]
    empty = tmp_path / "none"
    proc = subprocess.run([*make[:-1], f"WANDB_DIR={empty}"], env=env, check=True,
                          capture_output=True, text=True)
    assert "no offline runs" in proc.stdout and len((tmp_path / "calls").read_text().splitlines()) == 1
