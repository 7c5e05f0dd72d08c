"""Run directories keyed by config hash, atomic writes, and the done marker.

A trial's directory is `<runs root>/<experiment>/<hash>/`, the hash taken over the fields of its
config that differ from the dataclass defaults (open_lth's trick): two trials with the same
settings share a folder, so a finished trial is found and never recomputed, and a killed one
finds its checkpoint. Every file is written to a temporary name and renamed into place, so a
kill never leaves a half-written file behind, and a full disk never replaces a good file by a
partial one (the OSError names the file). A file that cannot be read all the same (a copy cut
short, a quota hit outside the lab) is moved aside as `<name>.corrupt`, never deleted, with one
warning line, and its trial is computed again: from its checkpoint where that is intact.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch

DONE = "done"
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
_WHOLE: set[tuple[str, int, int]] = set()  # artefact versions this process has read whole


def runs_root() -> Path:
    """`$LAB_RUNS_DIR` if set (tests), else `runs/`."""
    return Path(os.environ.get("LAB_RUNS_DIR", "runs"))


def results_dir(experiment: str, scale: str) -> Path:
    """`$LAB_RESULTS_DIR/<experiment>/<scale>` (tests), else `results/<experiment>/<scale>`."""
    return Path(os.environ.get("LAB_RESULTS_DIR", "results")) / experiment / scale


def non_default(cfg: Any) -> dict:
    """The fields of dataclass `cfg` whose values differ from its defaults, nested ones flattened."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in non_default(value).items()})
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if value != default:
            out[f.name] = value
    return out


def config_hash(cfg: Any) -> str:
    """12 hex digits of the SHA-1 of the non-default fields, in canonical JSON."""
    text = json.dumps(non_default(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def flat_config(cfg: Any) -> dict:
    """Every field of `cfg` (nested dataclasses as `outer.inner`), for logs and tables."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in flat_config(value).items()})
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _atomic(path: Path, write) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # name the file, not the temp file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def checkpoint_every_s() -> float:
    """Seconds between a training loop's checkpoints ($LAB_CHECKPOINT_EVERY_S, default 60; 0:
    at every evaluation). A loop also checkpoints at its last step and wherever it hands a trial
    back. A resumed run equals an uninterrupted one from any checkpoint, so the interval only
    bounds the work a kill loses; on a GPU a checkpoint at every evaluation (the paper lottery
    protocol evaluates every 100 steps) costs more than the training."""
    value = os.environ.get("LAB_CHECKPOINT_EVERY_S", "60")
    try:
        every = float(value)
    except ValueError:
        raise ValueError(f"LAB_CHECKPOINT_EVERY_S: expected seconds, got '{value}'") from None
    if not every >= 0:
        raise ValueError(f"LAB_CHECKPOINT_EVERY_S: must be >= 0, got {value}")
    return every


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save, atomically. Serialised in memory first: a full disk then surfaces as an
    OSError from the write (torch's own writer reports it as an opaque RuntimeError)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


# ----------------------------------------------------------------------------- damaged files

class Damaged(RuntimeError):
    """A finished trial's file could not be read: it was moved aside and the trial is unfinished
    again. `experiments.common.Experiment.main` runs the grid once more, which recomputes it."""


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:80]}" if text else type(err).__name__


def set_aside(path: Path, err: BaseException, then: str) -> Path:
    """Rename a damaged `path` to `<name>.corrupt` (`.corrupt-2`, ... if taken: nothing is ever
    deleted) and print one warning line naming it, why, and what happens `then`."""
    dest, n = path.with_name(path.name + ".corrupt"), 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{n}")
    os.replace(path, dest)
    print(f"warning: {path} cannot be read ({_why(err)}); moved to {dest.name}; {then}",
          file=sys.stderr, flush=True)
    return dest


def read_checkpoint(path: Path, map_location: Any = None) -> dict | None:
    """A training checkpoint's state, or None when there is none or it cannot be read (then it
    is moved aside, and the trial starts again from step 0)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a training checkpoint")
        return state
    except PermissionError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint costs only its progress
        set_aside(path, e, "the trial starts again from step 0")
        return None


def check_csv(path: Path) -> None:
    """ValueError unless the CSV at `path` is whole: a header, rows of the header's width, and
    the final newline that `lib.log.rows_to_csv` always writes. A missing file passes."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    rows = list(csv.reader(io.StringIO(text)))
    if not text.endswith("\n") or len(rows) < 2 or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("truncated or malformed CSV")


class Run:
    """One trial's folder: config.json, checkpoints, metrics.csv, result.json and `done`.

    Finished means: the done marker is there and result.json and metrics.csv can be read. A
    finished trial with a damaged file is unfinished again (the file is moved aside), and so is
    one whose artefact (`load`) cannot be read."""

    def __init__(self, experiment: str, cfg: Any, root: Path | None = None, scale: str = ""):
        self.cfg = cfg
        self.hash = config_hash(cfg)
        # smoke trials live apart (runs/smoke/...) so `make clean-smoke` can drop them
        base = (root or runs_root()) / ("smoke" if scale == "smoke" else "")
        self.dir = base / experiment / self.hash

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def done(self) -> bool:
        if not (self.dir / DONE).exists():
            return False
        try:
            self.result()
            self._read(self.path("metrics.csv"), check_csv)
            self._check_artefacts()
        except Damaged:
            return False
        LEDGER.finished.add(self.dir)
        return True

    def _check_artefacts(self) -> None:
        """Every saved tensor file of the trial (final.pt, mask.pt...) loads: read once per
        process and file version, so a reused trial's artefacts are known whole."""
        for path in sorted(self.dir.glob("*.pt")):
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
            if path.name != CHECKPOINT and key not in _WHOLE:
                self._read(path, lambda p: torch.load(p, map_location="cpu", weights_only=False))
                _WHOLE.add(key)

    def start(self) -> None:
        """Create the folder and record the full config (kept if it is already there)."""
        LEDGER.started.append(self.dir)
        if not self.path("config.json").exists():
            atomic_write_json(self.path("config.json"), {"hash": self.hash, **flat_config(self.cfg)})

    def finish(self, result: dict) -> None:
        """Write the trial's result, then the done marker: `done` exists only after the result."""
        atomic_write_json(self.path(RESULT), result)
        atomic_write_text(self.path(DONE), "")
        LEDGER.finished.add(self.dir)

    def result(self) -> dict:
        """result.json; a damaged one un-finishes the trial and raises `Damaged`."""
        result = self._read(self.path(RESULT), lambda p: json.loads(p.read_text()))
        if not isinstance(result, dict):
            raise self._damaged(self.path(RESULT), ValueError("not a JSON object"))
        return result

    def load(self, name: str, map_location: Any = None, reader: Any = None) -> Any:
        """Artefact `name` of this trial (final.pt, mask.pt...): `torch.load` (weights only), or
        `reader(path, map_location=...)`. Damaged or missing: the trial is unfinished again, and
        `Damaged` is raised (`Experiment.main` then computes it again)."""
        read = reader or (lambda p, map_location: torch.load(p, map_location, weights_only=True))
        return self._read(self.path(name), lambda p: read(p, map_location=map_location))

    def _read(self, path: Path, read) -> Any:
        try:
            return read(path)
        except PermissionError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the damage, the trial is recomputed
            raise self._damaged(path, e) from None

    def _damaged(self, path: Path, err: BaseException) -> Damaged:
        (self.dir / DONE).unlink(missing_ok=True)
        LEDGER.finished.discard(self.dir)
        then = "its trial will be computed again"
        if path.exists():
            set_aside(path, err, then)
        else:
            print(f"warning: {path} is missing; {then}", file=sys.stderr, flush=True)
        return Damaged(str(path))


class Ledger:
    """What this process saw of its trials: run folders found or made finished, and folders
    started (the last one not finished is the trial an interrupt stopped)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.finished: set[Path] = set()
        self.started: list[Path] = []

    def unfinished(self) -> list[Path]:
        return [d for d in dict.fromkeys(self.started) if d not in self.finished]


LEDGER = Ledger()


# ----------------------------------------------------------------------------- claims

CLAIM = "claim"


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim is stale: `$LAB_CLAIM_STALE_S` (tests make
    it short), else 120."""
    return float(os.environ.get("LAB_CLAIM_STALE_S", "120"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not waited for yet is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Claim:
    """The right to train one trial: `<run folder>/claim`, created with O_CREAT|O_EXCL (atomic on
    local and NFS filesystems), naming host, pid, start time and a token; its mtime is the
    heartbeat, refreshed by a thread of the owner while the trial trains. A claim is stale when
    its owner is a dead process of this host, or when it has had no heartbeat for
    `stale_after()` seconds (another host, a frozen job); a stale claim is taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CLAIM
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def owner(self) -> dict | None:
        """The claim file's content (host, pid, started, token), or None when there is none."""
        try:
            info = json.loads(self.path.read_text())
            info["age_s"] = time.time() - self.path.stat().st_mtime
            return info
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being written right now, or damaged: judge by its age
            try:
                return {"token": "?", "host": "?", "pid": -1,
                        "age_s": time.time() - self.path.stat().st_mtime}
            except FileNotFoundError:
                return None

    @staticmethod
    def is_stale(info: dict) -> bool:
        if info.get("host") == socket.gethostname() and info.get("pid", -1) > 0:
            if not _alive(info["pid"]):
                return True
        return info["age_s"] > stale_after()

    def acquire(self) -> bool:
        """Claim the trial: True when this process now owns it (a stale claim is taken over),
        False while another live worker does."""
        for _ in range(3):
            if self._create():
                return True
            info = self.owner()
            if info is None:
                continue  # released in between: try again
            if not self.is_stale(info):
                return False
            self._take_over(info)
        return False

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        host, pid, _ = self.token.split(":")
        with os.fdopen(fd, "w") as f:
            json.dump({"host": host, "pid": int(pid), "token": self.token,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
        return True

    def _take_over(self, seen: dict) -> None:
        """Move the stale claim aside under a private name; if what was moved is not the claim
        judged stale (its owner replaced it in between), put it back."""
        aside = self.path.with_name(f"{CLAIM}.stale-{self.token.replace(':', '-')}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text()).get("token")
        except (OSError, ValueError):
            moved = "?"
        if moved != seen.get("token"):
            try:
                os.link(aside, self.path)  # fails if a new claim is already there
            except FileExistsError:
                pass
        else:
            print(f"note: {self.path.parent.name}: claim of {seen.get('host')}:{seen.get('pid')} "
                  f"is stale ({seen['age_s']:.0f} s without a heartbeat); taking the trial over",
                  file=sys.stderr, flush=True)
        aside.unlink(missing_ok=True)

    def mine(self) -> bool:
        info = self.owner()
        return info is not None and info.get("token") == self.token

    def heartbeat(self) -> None:
        """Refresh the claim's mtime (the owner is alive)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path)

    def release(self) -> None:
        """Remove the claim if this process still owns it."""
        if self.mine():
            self.path.unlink(missing_ok=True)


class Claims:
    """The claims this process holds, and the thread that keeps their heartbeats."""

    def __init__(self):
        self.held: dict[Path, Claim] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def holds(self, run_dir: Path) -> bool:
        return Path(run_dir) in self.held

    def acquire(self, run_dir: Path) -> bool:
        """Claim `run_dir` (True when held, already by this process included)."""
        run_dir = Path(run_dir)
        if run_dir in self.held:
            return True
        claim = Claim(run_dir)
        if not claim.acquire():
            return False
        with self.lock:
            self.held[run_dir] = claim
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._beat, daemon=True, name="claims")
                self.thread.start()
        return True

    def release(self, run_dir: Path) -> None:
        with self.lock:
            claim = self.held.pop(Path(run_dir), None)
        if claim is not None:
            claim.release()

    @contextlib.contextmanager
    def hold(self, run_dir: Path) -> Iterator[bool]:
        """`with CLAIMS.hold(run.dir) as mine:` the trial is ours inside when `mine`; released
        at the end, unless an outer `hold` of this process had it already."""
        outer = self.holds(run_dir)
        mine = self.acquire(run_dir)
        try:
            yield mine
        finally:
            if mine and not outer:
                self.release(run_dir)

    def _beat(self) -> None:
        last = 0.0
        while True:  # wakes often, so a changed LAB_CLAIM_STALE_S applies at once
            time.sleep(0.05)
            if time.monotonic() - last < stale_after() / 6:
                continue
            last = time.monotonic()
            with self.lock:
                claims = list(self.held.values())
            for claim in claims:
                claim.heartbeat()


CLAIMS = Claims()
