"""Datasets: IDX reading, the torchvision on-disk layouts, splits, the batch iterator."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from lib import data, datacheck


@pytest.fixture(autouse=True)
def fake_files_pass_checksums(monkeypatch, tmp_path):
    """The files these tests write are not the real datasets: no known MD5s, a private stamp
    (tests/faults/test_fault_data.py checks the checksums)."""
    monkeypatch.setattr(datacheck, "IDX_MD5", {})
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def fake_mnist(folder, n_train=300, n_test=100, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28)), "train_y": rng.integers(0, 10, n_train),
              "test_x": rng.integers(0, 256, (n_test, 28, 28)), "test_y": rng.integers(0, 10, n_test)}
    for key, name in data.IDX_FILES.items():
        write_idx(folder / name, arrays[key], gz=gz)
    return arrays


def test_idx_roundtrip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a)
    write_idx(tmp_path / "b", a, gz=True)
    assert np.array_equal(data.read_idx(tmp_path / "a"), a)
    assert np.array_equal(data.read_idx(tmp_path / "b.gz"), a)


def test_fashion_mnist_from_data_dir(tmp_path):
    arrays = fake_mnist(tmp_path / "fm", gz=True)
    s = data.load("fashion_mnist", val_size=50, data_dir=tmp_path / "fm", download=False)
    assert s.train_x.shape == (250, 1, 28, 28) and s.val_x.shape == (50, 1, 28, 28)
    assert s.test_x.shape == (100, 1, 28, 28) and s.train_x.dtype == torch.float32
    assert torch.equal(s.test_y, torch.from_numpy(arrays["test_y"]).long())
    # normalised with the training split's statistics
    assert abs(s.train_x.mean().item()) < 1e-5 and abs(s.train_x.std().item() - 1) < 1e-3


def test_mnist_through_torchvision_layout(tmp_path):
    """MNIST goes through torchvision: raw IDX files under <root>/MNIST/raw/."""
    arrays = fake_mnist(tmp_path / "MNIST" / "raw")
    s = data.load("mnist", val_size=20, data_dir=tmp_path, download=False)
    assert s.num_classes == 10 and len(s.train_x) + len(s.val_x) == 300
    assert torch.equal(s.test_y, torch.from_numpy(arrays["test_y"]).long())


def test_cifar10_through_torchvision_layout(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches in torchvision's folder; md5 check stubbed for tiny files."""
    import torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, 20).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    s = data.load("cifar10", val_size=10, data_dir=tmp_path, download=False)
    assert s.train_x.shape == (90, 3, 32, 32) and s.test_x.shape == (20, 3, 32, 32)
    assert s.input_shape == (3, 32, 32)


def test_missing_dataset_is_one_actionable_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_DIR", raising=False)
    with pytest.raises(data.DataError) as e:
        data.load("mnist", data_dir=tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert "\n" not in msg and "DATA_DIR" in msg and "mnist" in msg


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="^dataset: unknown 'imagenet', choose from fashion_mnist, mnist"):
        data.load("imagenet")


def test_split_is_seeded_and_disjoint(tmp_path):
    fake_mnist(tmp_path / "fm")
    a = data.load("fashion_mnist", val_size=40, split_seed=3, data_dir=tmp_path / "fm", download=False)
    b = data.load("fashion_mnist", val_size=40, split_seed=3, data_dir=tmp_path / "fm", download=False)
    c = data.load("fashion_mnist", val_size=40, split_seed=4, data_dir=tmp_path / "fm", download=False)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    rows = {tuple(r.tolist()) for r in a.train_x.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in a.val_x.flatten(1))


def test_batch_iterator_is_a_function_of_seed_and_step():
    x, y = torch.arange(50.0).view(50, 1), torch.arange(50)
    it = data.BatchIterator(x, y, batch_size=8, seed=1)
    assert it.steps_per_epoch == 6
    stream = it.from_step(0)
    first = [next(stream) for _ in range(15)]
    epoch0 = torch.cat([b[1] for b in first[:6]])
    assert len(set(epoch0.tolist())) == 48  # no repeats within an epoch
    resumed = it.from_step(9)
    for i in range(9, 15):
        xb, yb = next(resumed)
        assert torch.equal(yb, first[i][1]) and torch.equal(xb, first[i][0])
    other = data.BatchIterator(x, y, batch_size=8, seed=2).from_step(0)
    assert not torch.equal(next(other)[1], first[0][1])


def test_augmentation_shapes_and_resume():
    x, y = torch.randn(40, 3, 8, 8), torch.arange(40)
    it = data.BatchIterator(x, y, batch_size=10, seed=0, augment=True)
    a = [next(it.from_step(0)) for _ in range(1)][0]
    assert a[0].shape == (10, 3, 8, 8)
    s = it.from_step(0)
    batches = [next(s) for _ in range(5)]
    assert torch.equal(next(it.from_step(4))[0], batches[4][0])


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        data.BatchIterator(torch.zeros(5, 1), torch.zeros(5), batch_size=6, seed=0)


def test_decoded_cache_is_identical_and_rebuilt_when_stale_or_damaged(tmp_path, monkeypatch, capsys):
    """data/cache/<name>.npz ($LAB_CACHE_DIR here): the same tensors as the gzip path; a source
    file changed since (size or mtime) rebuilds it, a damaged cache is a warning and a rebuild."""
    monkeypatch.setattr(data, "CACHE_MIN_BYTES", 0)  # fixtures are small: cache them anyway
    folder = tmp_path / "fm"
    fake_mnist(folder, gz=True)
    reads = []
    real_read = data._read_idx_dir
    monkeypatch.setattr(data, "_read_idx_dir", lambda *a: reads.append(1) or real_read(*a))

    def load():
        return data.load("fashion_mnist", val_size=50, data_dir=folder, download=False)

    decoded, cached = load(), load()
    assert len(reads) == 1 and data.cache_path("fashion_mnist").exists()
    for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(decoded, k), getattr(cached, k)), k

    new = fake_mnist(folder, gz=True, seed=1)  # a new version of the files: stale cache
    assert torch.equal(load().test_y, torch.from_numpy(new["test_y"]).long()) and len(reads) == 2
    load()
    assert len(reads) == 2

    cache = data.cache_path("fashion_mnist")
    raw = bytearray(cache.read_bytes())
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:1000] + bytes([b[1000] ^ 1]) + b[1001:]):
        cache.write_bytes(bytes(damage(raw)))
        assert torch.equal(load().test_y, torch.from_numpy(new["test_y"]).long())
        assert f"warning: {cache} is damaged" in capsys.readouterr().err
        load()  # rebuilt: read from the cache again
    assert len(reads) == 4 and "warning" not in capsys.readouterr().err


def test_crops_pad_with_black_as_torchvision_does():
    """torchvision's RandomCrop(32, padding=4) pads the raw image with 0 (black) before
    Normalize: on normalised tensors that is `Splits.black` = -mean / std per channel, not 0 (the
    mean). Every pixel of a crop is the image's or the fill; crops that move show the fill."""
    x = torch.full((64, 2, 8, 8), 5.0)
    fill = torch.tensor([-1.0, -2.0])
    out = data.random_crop_flip(x, torch.Generator().manual_seed(0), fill=fill)
    for c in (0, 1):
        values = set(out[:, c].unique().tolist())
        assert values == {5.0, fill[c].item()}, values
    assert set(data.random_crop_flip(x, torch.Generator().manual_seed(0)).unique().tolist()) == {0.0, 5.0}
    inner = torch.randn(64, 2, 8, 8)  # pad 0: each image itself or its mirror, bit for bit
    out = data.random_crop_flip(inner, torch.Generator().manual_seed(1), pad=0, fill=fill)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(2)) for o, i in zip(out, inner))
    s = data.load("fashion_mnist", val_size=100, train_limit=500, test_limit=100)
    torch.testing.assert_close(s.black, s.train_x.amin(dim=(0, 2, 3)))  # its background is black
    assert torch.equal(s.to("cpu").black, s.black)
