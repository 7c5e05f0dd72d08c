"""Known checksums of the dataset files, verified once per file version.

A dataset file cut short by a failed copy or quota, or altered, must stop a run with one line
that names it, not train on garbage or die in a decompressor. The MD5s below are those of the
*uncompressed* IDX files of the official releases: the .gz files differ between mirrors (the
Debian package recompresses them; torchvision lists the originals' .gz MD5s, and checks CIFAR's
own batches on every load), their content does not. Hashing 55 MB costs ~0.1 s, so a verified
file is remembered in a stamp keyed by its path, size and mtime (`stamp_path()`): later loads
only stat it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lib.runs import atomic_write_json

# MD5 of the uncompressed IDX files of the official MNIST and Fashion-MNIST releases
IDX_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
}


def stamp_path() -> Path:
    """`$LAB_CACHE_DIR/verified-data.json` (tests), else under `$XDG_CACHE_HOME` or ~/.cache:
    one place for every copy of the data, read-only system folders included."""
    base = os.environ.get("LAB_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compression-lab"
    return Path(base) / "verified-data.json"


def _key(path: Path) -> tuple[str, list[int]]:
    st = path.stat()
    return str(path.resolve()), [st.st_size, st.st_mtime_ns]


def _stamps() -> dict:
    try:
        return json.loads(stamp_path().read_text())
    except (OSError, ValueError):
        return {}


def is_verified(path: Path) -> bool:
    """True when this version of `path` (same size and mtime) passed its checksum before."""
    name, version = _key(path)
    return _stamps().get(name) == version


def mark_verified(path: Path) -> None:
    """Remember that this version of `path` passed (a stamp that cannot be written is skipped:
    the next load hashes again)."""
    name, version = _key(path)
    try:
        atomic_write_json(stamp_path(), {**_stamps(), name: version})
    except OSError:
        pass


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
