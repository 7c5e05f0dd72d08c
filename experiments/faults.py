"""What an experiment's run does when the world misbehaves: one line, the right exit code, and
nothing lost that a rerun cannot pick up.

- Ctrl-C (SIGINT) or a pre-empting cluster (SIGTERM): the trial being trained stops where it
  is; its last checkpoint is intact (every write is atomic), so the same command resumes it.
  One line counts the trials done and says so; exit 130 / 143.
- A full disk, a quota, a permission denied or a read-only folder: one line naming the file,
  the error and the free space there; exit 2. The file it was replacing is untouched.
- A damaged run file (`lib.runs.Damaged`): it was moved aside with a warning and its trial is
  unfinished again, so the grid is walked once more: finished trials are reused, the damaged
  one is computed again.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from experiments import provenance
from experiments.cli import fail
from lib.runs import LEDGER, Damaged

T = TypeVar("T")
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
SIGNALS = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
RETRIES = 10  # rounds of recomputing damaged trials before giving up


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(signum)


def free_space(path: Path) -> str:
    """Free space on the filesystem of `path` (or of its nearest existing parent), in words."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown space"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return ""


def disk_message(e: OSError) -> str:
    """`<file>: <error> (<ERRNO>); <free> free there; what to do` in one line."""
    where = e.filename or "a file"
    code = errno.errorcode.get(e.errno, str(e.errno))
    return (f"{where}: {e.strerror} ({code}); {free_space(Path(str(where)))} free there. Free "
            f"space or fix the permissions (or point LAB_RUNS_DIR / LAB_RESULTS_DIR elsewhere), "
            f"then rerun the same command to resume")


def interrupt_message(signum: int) -> str:
    """How far this invocation got, and how to go on, in one line."""
    done, trained = len(LEDGER.finished), len(provenance.CURRENT.trained)
    stopped = LEDGER.unfinished()
    mid = (f"; {len(stopped)} stopped mid-training, kept at {'their' if len(stopped) > 1 else 'its'}"
           f" last checkpoint" if stopped else "")
    return (f"interrupted by {SIGNALS.get(signum, signum)}: {done} trials done so far (in this "
            f"invocation: {trained} trained, {done - trained} reused{mid}); rerun the same "
            f"command to resume")


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run an experiment's body: interrupts and disk errors become one line and an exit code."""
    LEDGER.reset()
    main_thread = threading.current_thread() is threading.main_thread()  # signals: main only
    # SIGINT raises KeyboardInterrupt even when this process started with it ignored (a job
    # started with & from a script inherits SIG_IGN): Ctrl-C and `kill -INT` stop it cleanly
    previous = ((signal.signal(signal.SIGTERM, _raise_interrupted),
                 signal.signal(signal.SIGINT, signal.default_int_handler)) if main_thread else None)
    try:
        yield
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(interrupt_message(signum), file=sys.stderr, flush=True)
        raise SystemExit(128 + signum) from None
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        fail(disk_message(e))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


def until_whole(step: Callable[[], T]) -> T:
    """`step()`, again while it meets damaged run files: each round recomputes the trials whose
    files were moved aside, and reuses every finished one."""
    for _ in range(RETRIES):
        try:
            return step()
        except Damaged:
            continue
    fail(f"run files were still damaged after {RETRIES} rounds of recomputing them: check the "
         f"disk under {LEDGER.started[-1].parent if LEDGER.started else 'the runs folder'}")
    raise AssertionError  # unreachable: fail exits
