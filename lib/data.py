"""Datasets as in-memory tensors and a fast, resumable batch iterator.

Every loader returns a `Splits`: train / validation / test tensors, already normalised with the
per-channel mean and std of the training split. The validation split is carved from train with
its own seed (`split_seed`), so every trial of an experiment sees the same split whatever its
training seed. No DataLoader and no workers: MNIST-sized sets fit in memory many times over, and
a per-batch gather of a seeded permutation costs microseconds.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lib import datacheck
from lib.runs import atomic_write_bytes

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CHECKOUT_DATA = Path(__file__).resolve().parents[1] / "data"  # data/ of the checkout, wherever run
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_OFFICIAL_ROWS = {"train": 60000, "t10k": 10000}  # items per file of MNIST and Fashion-MNIST


class DataError(RuntimeError):
    """A dataset that cannot be found or read; the message is one line that says what to do."""


@dataclass
class Splits:
    """Normalised float tensors (N, C, H, W) and int64 labels for train, validation and test."""

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    # a black pixel, normalised (C,): what torchvision's RandomCrop(padding=4) pads with before
    # Normalize, so the crop's border here is the papers' (None: zeros, the mean)
    black: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> "Splits":
        moved = {k: getattr(self, k).to(device) for k in
                 ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        black = None if self.black is None else self.black.to(device)
        return Splits(name=self.name, num_classes=self.num_classes, black=black, **moved)


# ----------------------------------------------------------------------------- raw readers

def read_idx(path: Path, md5: str | None = None, fix: str = "delete it") -> np.ndarray:
    """Read an IDX file (plain or .gz) as a uint8 array of its stored shape.

    A file cut short, not gzip where it says so, or (first read of this version of the file)
    whose content's MD5 is not `md5` raises a one-line DataError naming it and `fix`."""
    def bad(problem: str) -> DataError:
        return DataError(f"{path} is damaged ({problem}): {fix}")

    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise bad(f"{type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise bad("not an IDX file")
    _zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if dtype_code != 0x08:
        raise DataError(f"{path}: IDX dtype code {dtype_code:#x} is not unsigned byte")
    offset = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:offset]) if len(raw) >= offset else ()
    if len(dims) != ndim or len(raw) != offset + int(np.prod(dims, dtype=np.int64)):
        raise bad(f"{len(raw)} bytes, its header promises {offset + int(np.prod(dims or [0]))}")
    # `md5` is the official file's: it applies to a file of the official length (a subset or a
    # synthetic set in the same layout has no known checksum; its header matched its length)
    official = dims[:1] == (IDX_OFFICIAL_ROWS.get(path.name.split("-")[0]),)
    if md5 and official and not datacheck.is_verified(path):
        got = datacheck.md5(raw)
        if got != md5:
            raise bad(f"MD5 of its content {got}, expected {md5}")
        datacheck.mark_verified(path)
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _find_idx_dir(candidates: list[Path]) -> Path | None:
    """First folder holding the four IDX files, plain or gzipped."""
    for folder in candidates:
        if all((folder / n).exists() or (folder / f"{n}.gz").exists() for n in IDX_FILES.values()):
            return folder
    return None


def _read_idx_dir(folder: Path, name: str, fix: str) -> tuple[np.ndarray, ...]:
    """The four arrays of `folder`, each file checked against dataset `name`'s known MD5s."""
    known = datacheck.IDX_MD5.get(name, {})

    def one(file: str) -> np.ndarray:
        plain = folder / file
        return read_idx(plain if plain.exists() else folder / f"{file}.gz", known.get(file), fix)
    return tuple(one(IDX_FILES[k]) for k in ("train_x", "train_y", "test_x", "test_y"))


def _search_roots(data_dir: str | Path | None) -> list[Path]:
    """The folders searched, in order: `data_dir`, $DATA_DIR, data/ of the checkout."""
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("DATA_DIR"):
        roots.append(Path(os.environ["DATA_DIR"]))
    roots.append(CHECKOUT_DATA)
    return roots


def _torchvision(cls_name: str, root: Path, download: bool, train: bool):
    import torchvision  # imported lazily: only the torchvision path needs it

    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise
    return cls(str(root), train=train, download=True)


def _load_torchvision(cls_name: str, name: str, data_dir, download: bool, hint: str):
    """Look for the torchvision on-disk layout under each root, else download to the first."""
    roots = _search_roots(data_dir)
    errors = []
    for i, root in enumerate(roots):
        try:
            train = _torchvision(cls_name, root, download and i == len(roots) - 1, True)
            test = _torchvision(cls_name, root, False, False)
            return train, test
        except Exception as e:  # noqa: BLE001 - collected into one actionable line below
            errors.append(f"{root}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    raise DataError(f"dataset '{name}' not found ({'; '.join(errors)}); {hint}")


def _mnist_like(cls_name: str, name: str, data_dir, download: bool,
                also: str = "") -> tuple[np.ndarray, ...]:
    train, test = _load_torchvision(
        cls_name, name, data_dir, download,
        f"set DATA_DIR to a folder with {cls_name}/raw/*-ubyte files, or go online to download{also}")
    return (train.data.numpy()[:, None], train.targets.numpy(),
            test.data.numpy()[:, None], test.targets.numpy())


def _idx_dataset(name: str, cls_name: str, subdirs: tuple[str, ...], system: list[Path],
                 data_dir, download: bool, fix: str, also: str = "") -> tuple[np.ndarray, ...]:
    """The first folder with the four IDX files: under each search root (`subdirs`, then
    torchvision's `<cls_name>/raw`), then the `system` folders; else a torchvision download."""
    candidates = [root / sub for root in _search_roots(data_dir) for sub in (*subdirs, f"{cls_name}/raw")]
    folder = _find_idx_dir(candidates + system)
    if folder is None:
        return _mnist_like(cls_name, name, data_dir, download, also)
    tx, ty, vx, vy = _cached(name, folder, lambda: _read_idx_dir(folder, name, fix))
    return tx[:, None], ty.astype(np.int64), vx[:, None], vy.astype(np.int64)


# ----------------------------------------------------------------------------- decoded cache

CACHE_MIN_BYTES = 1 << 20  # smaller sets (subsets, test fixtures) decode in milliseconds


def cache_path(name: str) -> Path:
    """data/cache/<name>.npz of the checkout (`$LAB_CACHE_DIR/<name>.npz` when set: tests), the
    decoded arrays of the dataset's files."""
    base = os.environ.get("LAB_CACHE_DIR")
    return (Path(base) if base else CHECKOUT_DATA / "cache") / f"{name}.npz"


def _source_key(folder: Path) -> str:
    """Which version of which files the cache holds: path, size and mtime of the four files."""
    parts = []
    for file in IDX_FILES.values():
        path = folder / file if (folder / file).exists() else folder / f"{file}.gz"
        st = path.stat()
        parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _cached(name: str, folder: Path, read: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """The four arrays of `folder`: from data/cache/<name>.npz when it was written from this
    version of the files (0.04 s), else `read()` (gzip and, once, MD5: 0.4 s) and the cache
    written atomically. An .npz is a zip: its CRC-32 finds a damaged cache, which is rebuilt
    with a warning. A cache that cannot be written is skipped (the next load decodes again)."""
    path, key = cache_path(name), _source_key(folder)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["source"]) == key:
                    return tuple(z[k] for k in ("train_x", "train_y", "test_x", "test_y"))
        except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
            print(f"warning: {path} is damaged ({type(e).__name__}: {e}); rebuilding it",
                  file=sys.stderr)
    arrays = read()
    if arrays[0].nbytes >= CACHE_MIN_BYTES:
        buf = io.BytesIO()
        np.savez(buf, source=np.array(key), **dict(zip(("train_x", "train_y", "test_x", "test_y"), arrays)))
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError:
            pass
    return arrays


def raw_fashion_mnist(data_dir=None, download: bool = True) -> tuple[np.ndarray, ...]:
    """$DATA_DIR, then data/, then the Debian package, then a torchvision download."""
    fix = ("delete it and rerun, reinstall it (apt-get install --reinstall dataset-fashion-mnist), "
           "or set DATA_DIR to a folder with good copies")
    return _idx_dataset("fashion_mnist", "FashionMNIST", ("", "fashion-mnist"),
                        [DEBIAN_FASHION_MNIST], data_dir, download, fix,
                        " (or: apt-get install dataset-fashion-mnist)")


def raw_mnist(data_dir=None, download: bool = True) -> tuple[np.ndarray, ...]:
    """<root>/mnist or torchvision's <root>/MNIST/raw under $DATA_DIR or data/, else a download."""
    fix = "delete it and rerun (torchvision downloads a fresh copy), or set DATA_DIR to good copies"
    return _idx_dataset("mnist", "MNIST", ("mnist",), [], data_dir, download, fix)


def read_cifar_batch(path: Path, md5: str, official_rows: int, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch of torchvision's layout: (N, 3, 32, 32) uint8 images, int64 labels.

    A batch holding the official release's number of images must have the official MD5
    (torchvision's); a batch of another size (a subset, a synthetic fixture) is not one of the
    official files and is checked for structure only. Anything unreadable: one-line DataError."""
    raw = path.read_bytes()
    try:
        entry = pickle.loads(raw, encoding="latin1")
        x = np.asarray(entry["data"], dtype=np.uint8)
        y = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a damaged file
        raise DataError(f"{path} is damaged ({type(e).__name__}: {e}): {fix}") from None
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
        raise DataError(f"{path} is damaged (images {x.shape}, labels {y.shape}): {fix}")
    if len(x) == official_rows and hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"{path} is damaged (MD5 of its content is not the official {md5}): {fix}")
    return x.reshape(-1, 3, 32, 32), y


def _read_cifar_folder(folder: Path, cls, name: str) -> tuple[np.ndarray, ...]:
    """The batches torchvision's `cls` lists (train, then test) from `folder`, concatenated."""
    fix = "delete it and rerun (torchvision downloads a fresh copy), or set DATA_DIR to good copies"
    out = []
    for files, rows in ((cls.train_list, 50000 // len(cls.train_list)),  # the official sizes
                        (cls.test_list, 10000 // len(cls.test_list))):
        parts = [read_cifar_batch(folder / f, md5, rows, fix) for f, md5 in files]
        out += [np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])]
    return tuple(out)


def _cifar(cls_name: str, name: str, data_dir, download: bool) -> tuple[np.ndarray, ...]:
    """torchvision's python batches (`cifar-10-batches-py/`, `cifar-100-python/`) under the
    first search root that has them all, read here; else torchvision downloads and checks them."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    files = [f for f, _ in cls.train_list + cls.test_list]
    for root in _search_roots(data_dir):
        if all((root / cls.base_folder / f).is_file() for f in files):
            return _read_cifar_folder(root / cls.base_folder, cls, name)
    train, test = _load_torchvision(
        cls_name, name, data_dir, download,
        f"set DATA_DIR to a folder with torchvision's {name} files, or go online to download")
    # torchvision keeps CIFAR as (N, H, W, C) uint8
    return (train.data.transpose(0, 3, 1, 2), np.asarray(train.targets, dtype=np.int64),
            test.data.transpose(0, 3, 1, 2), np.asarray(test.targets, dtype=np.int64))


def raw_cifar10(data_dir=None, download: bool = True) -> tuple[np.ndarray, ...]:
    return _cifar("CIFAR10", "cifar10", data_dir, download)


def raw_cifar100(data_dir=None, download: bool = True) -> tuple[np.ndarray, ...]:
    return _cifar("CIFAR100", "cifar100", data_dir, download)


def raw_synthetic(data_dir=None, download: bool = True, *, n_train: int = 3000,
                  n_test: int = 1000, shape=(1, 28, 28), num_classes: int = 10,
                  seed: int = 1234) -> tuple[np.ndarray, ...]:
    """Class prototypes plus noise, as uint8 images: learnable in a few hundred steps."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 255, size=(num_classes, *shape))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=n)
        x = protos[y] + rng.normal(0, 60, size=(n, *shape))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    return (*draw(n_train), *draw(n_test))


DATASETS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "fashion_mnist": raw_fashion_mnist,
    "mnist": raw_mnist,
    "cifar10": raw_cifar10,
    "cifar100": raw_cifar100,
    "synthetic": raw_synthetic,
}


# (input shape, classes, training images) of each dataset: what a config can be checked
# against before any file is read
SHAPES: dict[str, tuple[tuple[int, int, int], int, int]] = {
    "fashion_mnist": ((1, 28, 28), 10, 60000),
    "mnist": ((1, 28, 28), 10, 60000),
    "cifar10": ((3, 32, 32), 10, 50000),
    "cifar100": ((3, 32, 32), 100, 50000),
    "synthetic": ((1, 28, 28), 10, 3000),
}


def check_dataset_name(name: str) -> None:
    """One-line error for a dataset the registry does not know."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown '{name}', choose from {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------- splits

def load(name: str = "fashion_mnist", *, val_size: int = 5000, split_seed: int = 0,
         train_limit: int | None = None, test_limit: int | None = None,
         data_dir: str | Path | None = None, download: bool = True) -> Splits:
    """Load `name`, carve `val_size` validation images from train, normalise, return tensors.

    `train_limit` / `test_limit` keep a seeded subset (smoke runs). Mean and std are those of the
    training split after the validation images are removed, so nothing leaks from val or test.
    """
    check_dataset_name(name)
    if val_size < 0:
        raise ValueError(f"val_size: must be >= 0, got {val_size}")
    tx, ty, ex, ey = DATASETS[name](data_dir, download)
    num_classes = int(max(ty.max(), ey.max())) + 1
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(tx))
    if val_size >= len(tx):
        raise ValueError(f"val_size: {val_size} leaves no training data ({len(tx)} images)")
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_limit:
        train_idx = train_idx[:train_limit]
    if test_limit:
        test_idx = rng.permutation(len(ex))[:test_limit]
        ex, ey = ex[test_idx], ey[test_idx]

    train_x = torch.from_numpy(np.ascontiguousarray(tx[train_idx])).float().div_(255)
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    std = train_x.std(dim=(0, 2, 3), keepdim=True)

    def norm(x: np.ndarray) -> Tensor:
        return (torch.from_numpy(np.ascontiguousarray(x)).float().div_(255) - mean) / std

    return Splits(
        name=name,
        train_x=(train_x - mean) / std, train_y=torch.from_numpy(ty[train_idx]).long(),
        val_x=norm(tx[val_idx]), val_y=torch.from_numpy(ty[val_idx]).long(),
        test_x=norm(ex), test_y=torch.from_numpy(ey).long(),
        num_classes=num_classes, black=(-mean / std).flatten(),
    )


# ----------------------------------------------------------------------------- batches

def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4,
                     fill: Tensor | None = None) -> Tensor:
    """Standard CIFAR augmentation on a whole batch at once, on `x`'s device: pad (with `fill`,
    one value per channel, e.g. `Splits.black`; zeros when None), random crop, random h-flip.
    The offsets and flips are drawn from the CPU `generator` (the same crops on every device)
    and reach a GPU in one non-blocking copy: no host sync per batch."""
    b, c, h, w = x.shape
    if fill is None:
        padded = F.pad(x, (pad, pad, pad, pad))
    else:
        padded = fill.view(1, c, 1, 1).to(x.dtype).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
        padded[:, :, pad:pad + h, pad:pad + w] = x
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    dy, dx, flip = to_device(torch.stack([dy, dx, flip.long()]), x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
    return torch.where(flip.bool()[:, None, None, None], out.flip(3), out).contiguous()


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """`t` (on the CPU) on `device`; to a GPU through pinned memory, without blocking the host."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class BatchIterator:
    """Endless (x, y) batches; one seeded permutation per epoch, then plain slicing.

    Epoch e is shuffled with a generator seeded by (seed, e), so the batch at any global step
    is a pure function of (seed, step): a resumed run sees exactly the batches it would have.
    `index` holds the training-set indices of the batch last yielded.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, augment: bool = False,
                 fill: Tensor | None = None):
        if batch_size < 1 or batch_size > len(x):
            raise ValueError(f"batch_size: must be in [1, {len(x)}], got {batch_size}")
        self.x, self.y, self.batch_size, self.seed, self.augment = x, y, batch_size, seed, augment
        self.fill = fill  # the crop's padding (random_crop_flip)
        self.steps_per_epoch = len(x) // batch_size  # the ragged tail is dropped
        self.index: Tensor | None = None

    def from_step(self, step: int) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        b = self.batch_size
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = to_device(torch.randperm(len(self.x), generator=g), self.x.device)
            # gathering one batch at a time is cheaper than permuting the whole set per epoch
            for i in range(offset, self.steps_per_epoch):
                idx = perm[i * b:(i + 1) * b]
                xb, yb = self.x[idx], self.y[idx]
                self.index = idx
                if self.augment:  # seeded by the global step, so resume sees the same crops
                    step = epoch * self.steps_per_epoch + i
                    xb = random_crop_flip(xb, torch.Generator().manual_seed(self.seed ^ step << 20),
                                          fill=self.fill)
                yield xb, yb
            epoch, offset = epoch + 1, 0
