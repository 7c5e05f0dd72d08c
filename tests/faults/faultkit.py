"""Fault injection for tests/faults: run an experiment's real `main` in a child process, and kill
it (SIGKILL), interrupt it, or make its writes fail, at chosen or random moments.

Children are forked from a forkserver that imported the lab and loaded the smoke data once
(`faultkit_server`), so a child starts in milliseconds instead of the ~3 s of a fresh Python
with torch: a dozen kills and reruns fit in seconds. Everything else is the real command: the
same `Experiment.main`, run folders, atomic writes and report.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent
GRID = ["--scale", "smoke", "--levels", "1", "--seeds", "1"]  # 3 trials: one alone, a pack of 2
_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(["faultkit_server"])
_PRELOADED: dict = {}  # in the server: the smoke splits, shared by every child
_THREADS: list[int] = []  # in the server: torch's thread count before it was set to one


def preload() -> None:
    """In the forkserver: import the experiment and load the smoke data once."""
    import torch

    import experiments.lottery_ticket.__main__  # noqa: F401 - with its report (pandas, seaborn)
    from experiments import common
    from experiments.lottery_ticket.config import for_scale

    # no OpenMP thread pool may exist before a fork (a child would hang on it): the server works
    # on one thread, each child gets the usual number back
    _THREADS.append(torch.get_num_threads())
    torch.set_num_threads(1)
    setup = for_scale("smoke").setup
    _PRELOADED[tuple(sorted(setup.data_fields().items()))] = common.load_data(setup, torch.device("cpu"))


def _use_preloaded() -> None:
    from experiments import common

    original = common.load_data

    def load_data(setup, device):
        key = tuple(sorted(setup.data_fields().items()))
        return _PRELOADED[key] if key in _PRELOADED else original(setup, device)

    common.load_data = load_data


def _arm_write_fault(site: str, nth: int, action: str) -> None:
    """At the `nth` atomic write of a file whose path contains `site`: SIGKILL this process
    while the temp file is written but not renamed (`mid`), or just before / after the write;
    or raise OSError(errno `action`) from the write."""
    from lib import runs

    original, seen = runs._atomic, [0]

    def _atomic(path, write):
        if site not in str(path):
            return original(path, write)
        seen[0] += 1
        if seen[0] != nth:
            return original(path, write)
        if action == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "mid":
            def write_then_die(f):
                write(f)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return original(path, write_then_die)
        if action.isdigit():  # the disk fills (or access is denied) half-way through the write
            def write_then_fail(f):
                f.write(b"partial")
                raise OSError(int(action), os.strerror(int(action)))
            return original(path, write_then_fail)
        original(path, write)
        os.kill(os.getpid(), {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(action, signal.SIGKILL))

    runs._atomic = _atomic


def _child(module: str, argv: list[str], base: str, log: str, fault: dict, wandb: bool) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update({"LAB_RUNS_DIR": f"{base}/runs", "LAB_RESULTS_DIR": f"{base}/results",
                       "WANDB_DIR": base, "WANDB_MODE": "offline" if wandb else "disabled",
                       "LAB_PROGRESS": "0"})
    _use_preloaded()
    from tqdm.auto import tqdm

    tqdm.set_lock(threading.RLock())  # not tqdm's multiprocessing lock: killed, it would leak
    if _THREADS:
        import torch

        torch.set_num_threads(_THREADS[0])
    # as a job started with & from a script (SIGINT inherited as ignored), or as a terminal's
    signal.signal(signal.SIGINT, signal.SIG_IGN if fault.get("sigint_ignored") else signal.default_int_handler)
    if "site" in fault:
        _arm_write_fault(fault["site"], fault.get("nth", 1), fault.get("action", "mid"))
    if "after_s" in fault:
        timer = threading.Timer(fault["after_s"], os.kill, (os.getpid(), fault.get("signal", signal.SIGKILL)))
        timer.daemon = True
        timer.start()
    import importlib

    code = 0
    try:
        importlib.import_module(f"experiments.{module}.__main__").EXPERIMENT.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Result:
    """How a child ended: its exit code (-9 for SIGKILL) and what it printed."""

    def __init__(self, code: int, output: str):
        self.code, self.output = code, output

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL

    @property
    def stderr_lines(self) -> list[str]:
        return [ln for ln in self.output.splitlines() if ln.startswith(("error:", "interrupted"))]


def run(base: Path, argv: list[str] = GRID, fault: dict | None = None, module: str = "lottery_ticket",
        wandb: bool = False, timeout: float = 120) -> Result:
    """Run `experiments.<module>` with `argv` in a child writing under `base`; `fault`: a write
    site to kill or fail at (`site`, `nth`, `action`), or `after_s` (+ `signal`) for a timed
    kill; `action` "sigint" / "sigterm" sends that signal right after the write. With `wandb`
    the child logs offline wandb runs under `base`."""
    base.mkdir(parents=True, exist_ok=True)
    log = base / f"child-{time.monotonic_ns()}.log"
    proc = _CTX.Process(target=_child, args=(module, list(argv), str(base), str(log), fault or {}, wandb))
    # the forkserver (started by the first child) must find this folder and the lab to preload
    # them: Python 3.11's forkserver ignores the parent's sys.path, so PYTHONPATH says it
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(HERE.parents[1]), old]))
    try:
        proc.start()
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.update(PYTHONPATH=old)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"child did not finish in {timeout} s: {log.read_text()[-2000:]}")
    return Result(proc.exitcode, log.read_text() if log.exists() else "")


# ----------------------------------------------------------------------------- comparing runs

_BASELINE: list = []


@pytest.fixture(scope="session")
def baseline(tmp_path_factory) -> tuple[Path, dict]:
    """(base folder, outcome) of `GRID` run without any fault: computed once per session, for
    every test module that imports this fixture."""
    if not _BASELINE:
        base = tmp_path_factory.mktemp("uninterrupted")
        res = run(base)
        assert res.code == 0, res.output
        _BASELINE.append((base, outcome(base)))
    return _BASELINE[0]


NUMBERS = ["run", "seed", "level", "variant", "weights_left", "test_acc", "val_acc",
           "final_test_acc", "final_val_acc", "early_stop_iter", "final_step"]


def outcome(base: Path, module: str = "lottery_ticket") -> dict:
    """What a finished grid computed: its trials' numbers, learning curves and final weights
    (nothing that depends on wall time)."""
    import torch

    def records(df: pd.DataFrame) -> list[dict]:  # NaN (the untrained point's loss) as None
        return df.astype(object).where(df.notna(), None).to_dict("records")

    trials = pd.read_csv(base / "results" / module / "smoke" / "trials.csv")
    runs = base / "runs" / "smoke" / module
    out = {"trials": records(trials[[c for c in NUMBERS if c in trials]].sort_values("run"))}
    for h in trials.run:
        out[f"{h}/metrics"] = records(pd.read_csv(runs / h / "metrics.csv"))
        final = runs / h / "final.pt"
        if final.exists():
            out[f"{h}/final"] = {k: v.tolist() for k, v in torch.load(final, weights_only=True).items()}
    return out


def same(a, b, rel: float = 1e-5, where: str = "outcome") -> None:
    """Assert two outcomes equal, numbers within `rel` (relative; absolute near zero): a trial
    recomputed alone after damage and the same trial trained in a pack agree to float
    tolerance, not bit for bit. Names the first differing entry."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a.keys() ^ b.keys())} differ"
        for k in a:
            same(a[k], b[k], rel, f"{where}[{k!r}]")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, rel, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and abs(a - b) <= rel * max(abs(a), abs(b), 1.0), \
            f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def intact(base: Path) -> list[str]:
    """Files under base/runs that a kill must never leave broken: checkpoints, results, final
    weights and masks all load. Returns the broken ones."""
    import json

    import torch

    broken = []
    for path in (base / "runs").rglob("*"):
        try:
            if path.suffix == ".pt":
                torch.load(path, weights_only=False)
            elif path.name == "result.json":
                json.loads(path.read_text())
        except Exception:  # noqa: BLE001
            broken.append(str(path))
    return broken


def done_markers(base: Path) -> dict[Path, int]:
    """Every finished trial's done marker with its modification time (ns)."""
    return {p: p.stat().st_mtime_ns for p in (base / "runs").rglob("done")}


def random_fault(rng: random.Random) -> dict:
    """A kill at a random moment of one of the grid's phases."""
    phase = rng.choice(["training", "checkpoint", "finish", "report"])
    if phase == "training":
        return {"after_s": rng.uniform(0.02, 1.2), "phase": phase}
    sites = {"checkpoint": ["checkpoint.pt"], "finish": ["final.pt", "mask.pt", "metrics.csv",
                                                         "result.json", "done", "config.json"],
             "report": ["trials.csv", "curves.csv", "run.json", "table.md", ".png"]}[phase]
    return {"site": rng.choice(sites), "nth": rng.randint(1, 3),
            "action": rng.choice(["mid", "before", "after"]), "phase": phase}
