"""How well a student's embedding space keeps the teacher's structure, on a fixed test sample.

RKD's argument is that what should transfer is the *geometry* of the embedding space (who is
close to whom, at what angle) rather than the outputs themselves. These metrics measure that
geometry directly, after training, on the same test images for every model:
- `dist_spearman` / `dist_pearson`: rank / linear correlation between the student's and the
  teacher's pairwise distances (all n(n−1)/2 pairs);
- `angle_pearson`: correlation of the cosines of all triplet angles (RKD's ψ_A) on the first
  `angle_size` images;
- `rkd_d_loss` / `rkd_a_loss`: the RKD losses themselves (normalised distances / angles,
  Huber), averaged over test batches of `batch` images: 0 when the structure is identical;
- `knn_overlap`: mean fraction of each image's k nearest teacher neighbours that are also among
  its k nearest student neighbours;
- `recall_at_1`: leave-one-out nearest neighbour in embedding space has the same label (the
  metric-learning measure of the RKD paper), a property of the space alone.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lib.distill import RKDAngle, RKDDistance, FeatureTap
from lib.distill.rkd import triplet_angles


@torch.no_grad()
def embed(model: nn.Module, layer: str, x: Tensor, chunk: int = 1024) -> Tensor:
    """`layer`'s output for `x`, flattened to (N, D), in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    with FeatureTap(model, [layer]) as tap:
        for i in range(0, len(x), chunk):
            model(x[i:i + chunk])
            out.append(tap()[0].flatten(1))
    model.train(was_training)
    return torch.cat(out)


def upper(m: Tensor) -> Tensor:
    """The strictly upper-triangular entries of a square matrix, as a vector."""
    i, j = torch.triu_indices(len(m), len(m), offset=1, device=m.device)
    return m[i, j]


def pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def ranks(v: Tensor) -> Tensor:
    """Ranks 0..n−1 (ties broken by position; distances of real embeddings rarely tie)."""
    r = torch.empty_like(v, dtype=torch.float64)
    r[v.argsort()] = torch.arange(len(v), dtype=torch.float64, device=v.device)
    return r


def spearman(a: Tensor, b: Tensor) -> float:
    return pearson(ranks(a), ranks(b))


def neighbours(e: Tensor, k: int) -> Tensor:
    """Indices (N, k) of each row's k nearest other rows (Euclidean)."""
    d = torch.cdist(e, e)
    d.fill_diagonal_(float("inf"))
    return d.topk(k, dim=1, largest=False).indices


def recall_at_1(e: Tensor, y: Tensor) -> float:
    """Fraction of images whose nearest other image (leave-one-out) has the same label."""
    return float((y[neighbours(e, 1)[:, 0]] == y).double().mean())


def knn_overlap(e_s: Tensor, e_t: Tensor, k: int) -> float:
    """Mean |kNN_s(i) ∩ kNN_t(i)| / k over the images."""
    n_s, n_t = neighbours(e_s, k), neighbours(e_t, k)
    shared = (n_s.unsqueeze(2) == n_t.unsqueeze(1)).any(dim=2).sum(dim=1)  # (N,)
    return float(shared.double().mean() / k)


def angle_pearson(e_s: Tensor, e_t: Tensor) -> float:
    """Correlation of the cosines of all triplet angles at distinct i, j, k."""
    n = len(e_s)
    eye = torch.eye(n, dtype=torch.bool, device=e_s.device)
    # (n, n, n) [i, j, k]: True where i != j, j != k and i != k
    distinct = ~(eye.unsqueeze(2) | eye.unsqueeze(0) | eye.unsqueeze(1))
    return pearson(triplet_angles(e_s)[distinct], triplet_angles(e_t)[distinct])


def batched_rkd(e_s: Tensor, e_t: Tensor, loss: nn.Module, batch: int) -> float:
    """Mean of `loss` over consecutive full batches of the sample (the ragged tail dropped)."""
    n = len(e_s) // batch * batch
    values = [float(loss(e_s[i:i + batch], e_t[i:i + batch])) for i in range(0, n, batch)]
    return sum(values) / len(values)


@torch.no_grad()
def structure_metrics(e_s: Tensor, e_t: Tensor, y: Tensor, *, angle_size: int, k: int,
                      batch: int) -> dict[str, float]:
    """Every metric of the module docstring for student embeddings `e_s` (N, D_s) against the
    teacher's `e_t` (N, D_t) of the same images, labels `y` (N,)."""
    if len(e_s) != len(e_t) or len(e_s) != len(y):
        raise ValueError(f"structure: sizes differ, {len(e_s)}, {len(e_t)} and {len(y)}")
    e_s, e_t = e_s.double(), e_t.double()  # exact ties and rounding out of the way
    d_s, d_t = upper(torch.cdist(e_s, e_s)), upper(torch.cdist(e_t, e_t))
    return {
        "dist_spearman": spearman(d_s, d_t),
        "dist_pearson": pearson(d_s, d_t),
        "angle_pearson": angle_pearson(e_s[:angle_size], e_t[:angle_size]),
        "rkd_d_loss": batched_rkd(e_s, e_t, RKDDistance(), min(batch, len(e_s))),
        "rkd_a_loss": batched_rkd(e_s, e_t, RKDAngle(), min(batch, len(e_s))),
        "knn_overlap": knn_overlap(e_s, e_t, k),
        "recall_at_1": recall_at_1(e_s, y),
    }
