"""Small synthetic datasets written in the exact on-disk layouts torchvision reads.

- CIFAR-10: `<root>/cifar-10-batches-py/` with `data_batch_1..5`, `test_batch` and
  `batches.meta`; CIFAR-100: `<root>/cifar-100-python/` with `train`, `test` and `meta`. Each is
  a pickled dict of `data` ((N, 3072) uint8, channel-major rows), `labels` / `fine_labels` (and
  `coarse_labels`), `filenames`, `batch_label`, as in the official archives.
- MNIST: `<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, big-endian IDX.

Labels are learnable: each class has a prototype (a coarse 4x4 grid of colours or grey levels,
upscaled, so a random crop of 4 pixels and a flip keep most of it) and each image is its
class's prototype plus Gaussian noise. Sizes are not the official ones, so no official
checksum applies (lib/data.py checks those only on files of the official length).
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def prototype_images(n: int, num_classes: int, shape: tuple[int, int, int], rng: np.random.Generator,
                     protos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 images (N, C, H, W) of random classes: prototype + noise; and their labels."""
    y = rng.integers(0, num_classes, size=n)
    x = protos[y] + rng.normal(0, 25, size=(n, *shape))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def make_prototypes(num_classes: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """(classes, C, H, W) float prototypes: a 4x4 grid of levels in [30, 225], upscaled."""
    c, h, w = shape
    grid = np.random.default_rng(seed).uniform(30, 225, size=(num_classes, c, 4, 4))
    return grid.repeat(-(-h // 4), axis=2).repeat(-(-w // 4), axis=3)[:, :, :h, :w]


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar(root: Path, num_classes: int, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write CIFAR-10 (`num_classes` 10) or CIFAR-100 (100) under `root`; return its folder."""
    rng = np.random.default_rng(seed)
    protos = make_prototypes(num_classes, (3, 32, 32), seed + 1)

    def batch(n: int, label: str) -> dict:
        x, y = prototype_images(n, num_classes, (3, 32, 32), rng, protos)
        d = {"batch_label": label, "data": x.reshape(n, -1),
             "filenames": [f"synthetic_{label}_{i}.png" for i in range(n)]}
        if num_classes == 10:
            d["labels"] = y.tolist()
        else:
            d["fine_labels"], d["coarse_labels"] = y.tolist(), (y // 5).tolist()
        return d

    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
            _pickle(folder / f"data_batch_{i + 1}", batch(len(part), f"training batch {i + 1} of 5"))
        _pickle(folder / "test_batch", batch(n_test, "testing batch 1 of 1"))
        _pickle(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": n_train // 5,
                                          "num_vis": 3072})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        _pickle(folder / "train", batch(n_train, "training batch 1 of 1"))
        _pickle(folder / "test", batch(n_test, "testing batch 1 of 1"))
        _pickle(folder / "meta", {"fine_label_names": [f"class_{i}" for i in range(num_classes)],
                                  "coarse_label_names": [f"super_{i}" for i in range(num_classes // 5)]})
    return folder


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, n_train: int, n_test: int, seed: int = 0, folder: str = "MNIST") -> Path:
    """Write torchvision's `<folder>/raw/` IDX files (10 classes, 1x28x28); return the raw folder."""
    rng = np.random.default_rng(seed)
    protos = make_prototypes(10, (1, 28, 28), seed + 1)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = prototype_images(n, 10, (1, 28, 28), rng, protos)
        _idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return raw


def write_all(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """CIFAR-10, CIFAR-100 and MNIST under `root` (a DATA_DIR); return `root`."""
    write_cifar(root, 10, n_train, n_test, seed=10)
    write_cifar(root, 100, n_train, n_test, seed=100)
    write_mnist(root, n_train, n_test, seed=7)
    return root
