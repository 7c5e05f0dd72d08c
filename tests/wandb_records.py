"""Read what an offline wandb run recorded, straight from its .wandb file (for tests).

The file is a LevelDB-style log: a 7-byte header (':W&B', magic, version), then 32 KiB blocks
of records, each with a 7-byte header (crc32, length, type) and a protobuf `Record` payload.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and n == 0:
            pos += left - 7
            continue
        buf += data[pos:pos + n]
        pos += n
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(path: Path, wait_s: float = 30.0) -> list:
    """The records of `path` once wandb has written the run's `exit` record. `run.finish()` can
    return before wandb's writer process has flushed the file (seen on a loaded 2-core machine:
    the read found the header but not yet the `run` record), so poll until the log is complete;
    after `wait_s`, return what is there and let the caller's assertion say what is missing."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            recs = list(records(path))
        except Exception:  # noqa: BLE001 - a record half-written at the end of the file
            recs = []
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def read_run(run_dir: Path) -> dict:
    """{'run': run record, 'config': dict, 'history': [dict], 'summary': dict} of one finished
    run (waits for wandb to finish writing it: `finished_records`)."""
    path = next(Path(run_dir).glob("run-*.wandb"))
    out = {"run": None, "config": {}, "history": [], "summary": {}}
    for rec in finished_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
    return out


def offline_runs(wandb_root: Path, reports: bool = False) -> list[dict]:
    """The offline runs under `wandb_root`: the trials' (and, with `reports`, the `report` runs
    of the invocations that wrote a report: experiments.dashboard)."""
    return [read_run(d) for d in sorted(Path(wandb_root).glob("wandb/offline-run-*"))
            if reports or "-report-" not in d.name]
