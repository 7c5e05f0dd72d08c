"""Run directories keyed by config hash, atomic writes, and the done marker.

A trial's directory is `<runs root>/<experiment>/<hash>/`, the hash taken over the fields of its
config that differ from the dataclass defaults (open_lth's trick): two trials with the same
settings share a folder, so a finished trial is found and never recomputed, and a killed one
finds its checkpoint. Every file is written to a temporary name and renamed into place, so a
kill never leaves a half-written file behind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

DONE = "done"
RESULT = "result.json"


def runs_root() -> Path:
    """`$LAB_RUNS_DIR` if set (tests), else `runs/`."""
    return Path(os.environ.get("LAB_RUNS_DIR", "runs"))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(Path(path), lambda f: torch.save(obj, f))


class Run:
    """One trial's folder: config.json, checkpoints, metrics.csv, result.json and `done`."""

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
        return (self.dir / DONE).exists()

    def start(self) -> None:
        """Create the folder and record the full config (kept if it is already there)."""
        if not self.path("config.json").exists():
            atomic_write_json(self.path("config.json"), {"hash": self.hash, **flat_config(self.cfg)})

    def finish(self, result: dict) -> None:
        """Write the trial's result, then the done marker: `done` exists only after the result."""
        atomic_write_json(self.path(RESULT), result)
        atomic_write_text(self.path(DONE), "")

    def result(self) -> dict:
        return json.loads(self.path(RESULT).read_text())
