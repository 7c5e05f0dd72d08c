"""The paper datasets' loaders on synthetic files in torchvision's exact layouts (conftest's
`synthetic_data_dir`): CIFAR-10 / CIFAR-100 python batches and MNIST IDX, read through the
torchvision-layout path of lib.data with the right shapes, classes and normalisation."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lib import data

CASES = [("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100), ("mnist", (1, 28, 28), 10)]


@pytest.mark.parametrize("name,shape,classes", CASES, ids=[c[0] for c in CASES])
def test_load_reads_the_torchvision_layout(synthetic_data_dir, monkeypatch, name, shape, classes):
    monkeypatch.setenv("DATA_DIR", str(synthetic_data_dir))  # found through $DATA_DIR
    s = data.load(name, val_size=100, download=False)
    assert s.input_shape == shape and s.num_classes == classes
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (500, 100, 200)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    mean, std = s.train_x.mean(dim=(0, 2, 3)), s.train_x.std(dim=(0, 2, 3))  # per channel
    torch.testing.assert_close(mean, torch.zeros(shape[0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones(shape[0]), atol=1e-4, rtol=0)
    assert 0 <= int(s.train_y.min()) and int(s.train_y.max()) < classes


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
def test_torchvision_reads_the_same_files(synthetic_data_dir, monkeypatch, name):
    """The files are torchvision's layout: its own classes parse them to the same arrays (its
    CIFAR classes also demand the official MD5s, which synthetic files cannot have: off here)."""
    import torchvision
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)
    cls = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST"}[name]
    tv = getattr(torchvision.datasets, cls)(str(synthetic_data_dir), train=True, download=False)
    ours = data.DATASETS[name](synthetic_data_dir, False)
    images = np.asarray(tv.data)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # (N, C, H, W)
    np.testing.assert_array_equal(images, ours[0])
    np.testing.assert_array_equal(np.asarray(tv.targets), ours[1])
    if name != "mnist":
        assert len(tv.classes) == int(ours[1].max()) + 1


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
def test_labels_are_learnable(synthetic_data_dir, name):
    """A nearest-class-mean classifier fit on train gets most of test right."""
    tx, ty, ex, ey = data.DATASETS[name](synthetic_data_dir, False)
    tx, ex = tx.reshape(len(tx), -1).astype(np.float32), ex.reshape(len(ex), -1).astype(np.float32)
    classes = np.unique(ty)
    means = np.stack([tx[ty == c].mean(0) for c in classes])
    pred = classes[((ex[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (pred == ey).mean() > 0.9


def test_a_damaged_cifar_batch_is_one_line(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}q\x00(X")  # a pickle cut short
    with pytest.raises(data.DataError, match=r"data_batch_1 is damaged \(.*\): fix it$"):
        data.read_cifar_batch(path, "0" * 32, 10000, "fix it")
    rows = {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 2]}
    path.write_bytes(pickle.dumps(rows))
    assert data.read_cifar_batch(path, "0" * 32, 10000, "x")[0].shape == (3, 3, 32, 32)  # not official
    with pytest.raises(data.DataError, match="MD5 of its content is not the official"):
        data.read_cifar_batch(path, "0" * 32, 3, "x")  # the official length: the MD5 applies
    path.write_bytes(pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]}))
    with pytest.raises(data.DataError, match=r"images \(3, 100\)"):
        data.read_cifar_batch(path, "0" * 32, 10000, "x")
