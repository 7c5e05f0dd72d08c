"""Dataset files: where they are looked for (in order, with files the tests write), and what a
truncated or altered file does (one line naming it and the fix, before any training)."""
from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from lib import data, datacheck

REAL = data.DEBIAN_FASHION_MNIST


def write_set(folder: Path, label: int, gz: bool = False, n: int = 60) -> dict[str, str]:
    """Four tiny IDX files whose labels are all `label` (which folder was read shows in the
    labels); returns their content MD5s."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_x": np.zeros((n, 28, 28)), "train_y": np.full(n, label),
              "test_x": np.zeros((20, 28, 28)), "test_y": np.full(20, label)}
    md5s = {}
    for key, name in data.IDX_FILES.items():
        a = arrays[key].astype(np.uint8)
        raw = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
        md5s[name] = datacheck.md5(raw)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return md5s


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Every place of the look-up order, empty: $DATA_DIR, data/ of the checkout, the Debian
    folder; the working folder elsewhere (with a decoy data/ that must never be read)."""
    p = {"env": tmp_path / "env", "checkout": tmp_path / "checkout" / "data",
         "debian": tmp_path / "usr-share" / "fashion-mnist", "cwd": tmp_path / "cwd"}
    monkeypatch.setenv("DATA_DIR", str(p["env"]))
    monkeypatch.setattr(data, "CHECKOUT_DATA", p["checkout"])
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", p["debian"])
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datacheck, "IDX_MD5", {"fashion_mnist": {}, "mnist": {}})
    write_set(p["cwd"] / "data", label=9)
    monkeypatch.chdir(p["cwd"])
    return p


def read_label() -> int:
    return int(data.raw_fashion_mnist(download=False)[1][0])


def test_data_folder_is_the_checkouts():
    assert data.CHECKOUT_DATA == Path(__file__).resolve().parents[2] / "data"


def test_lookup_order(places):
    """$DATA_DIR (flat, fashion-mnist/, torchvision's FashionMNIST/raw), then data/ of the
    checkout (the same three layouts), then the Debian folder: each found in turn as the ones
    before it are removed."""
    layouts = [places["env"], places["env"] / "fashion-mnist", places["env"] / "FashionMNIST" / "raw",
               places["checkout"], places["checkout"] / "fashion-mnist",
               places["checkout"] / "FashionMNIST" / "raw", places["debian"]]
    for label, folder in enumerate(layouts):
        write_set(folder, label, gz=label % 2 == 1)
    for label, folder in enumerate(layouts):
        assert read_label() == label, folder
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()
    with pytest.raises(data.DataError) as e:  # nothing left (the cwd's data/ is not looked at)
        data.raw_fashion_mnist(download=False)
    msg = str(e.value)
    assert "\n" not in msg and "set DATA_DIR" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert str(places["env"]) in msg and str(places["checkout"]) in msg


def test_mnist_torchvision_layout_and_hint(places):
    write_set(places["checkout"] / "MNIST" / "raw", label=4)
    assert int(data.raw_mnist(download=False)[1][0]) == 4
    shutil.rmtree(places["checkout"] / "MNIST")
    with pytest.raises(data.DataError, match="dataset 'mnist' not found .*set DATA_DIR to a folder "
                                              "with MNIST/raw/\\*-ubyte files"):
        data.raw_mnist(download=False)


def _bad_copy(tmp_path: Path, how: str) -> Path:
    """The real Fashion-MNIST (links) with one file damaged: its labels."""
    folder = tmp_path / "fm"
    folder.mkdir()
    for f in REAL.iterdir():
        (folder / f.name).symlink_to(f)
    labels = folder / "train-labels-idx1-ubyte.gz"
    raw = (REAL / labels.name).read_bytes()
    labels.unlink()
    if how == "truncated":
        labels.write_bytes(raw[: len(raw) // 2])
    else:  # a plain copy with one label changed: the right size, the wrong content
        plain = bytearray(gzip.decompress(raw))
        plain[100] = (plain[100] + 1) % 10
        labels.with_suffix("").write_bytes(bytes(plain))
        labels = labels.with_suffix("")
    return labels


needs_real_data = pytest.mark.skipif(not REAL.exists(), reason="needs dataset-fashion-mnist")


@needs_real_data
@pytest.mark.parametrize("how", ["truncated", "wrong_checksum"])
def test_a_damaged_dataset_file_is_one_line_naming_it(how, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    bad = _bad_copy(tmp_path, how)
    with pytest.raises(data.DataError) as e:
        data.raw_fashion_mnist(tmp_path / "fm", download=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{bad} is damaged (")
    assert ("MD5 of its content" if how == "wrong_checksum" else "EOFError") in msg
    assert "delete it" in msg and "apt-get install --reinstall dataset-fashion-mnist" in msg
    assert "DATA_DIR" in msg


@needs_real_data
def test_a_damaged_dataset_file_stops_the_command_before_training(tmp_path, monkeypatch, capsys):
    from cli import assert_rejected

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    bad = _bad_copy(tmp_path, "truncated")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "fm"))
    assert_rejected("lottery_ticket", (), f"{bad} is damaged", tmp_path / "out", capsys)


@needs_real_data
def test_checksums_are_verified_once_per_file_version(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    hashed = []
    real_md5 = datacheck.md5
    monkeypatch.setattr(datacheck, "md5", lambda b: hashed.append(len(b)) or real_md5(b))
    data.raw_fashion_mnist(REAL, download=False)
    assert len(hashed) == 4  # first load: every file hashed, and the real ones pass
    data.raw_fashion_mnist(REAL, download=False)
    assert len(hashed) == 4  # then only stat()ed
    copy = tmp_path / "copy"
    shutil.copytree(REAL, copy)
    data.raw_fashion_mnist(copy, download=False)
    assert len(hashed) == 8  # another file (or a new version of one) is hashed again
