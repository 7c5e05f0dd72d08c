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

import csv
import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

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
