"""Deep Mutual Learning (Zhang et al., CVPR 2018) as one module for the one training loop.

`Peers` holds P networks; in training mode its forward runs every peer on the batch and keeps
their logits, and `mutual_criterion(peers)` gives the loop the summed loss

    Σ_k [ CE(y, p_k) + 1/(P−1) · Σ_{l≠k} KL(p_l ‖ p_k) ],   p_l detached in peer k's term,

so one backward pass gives each peer exactly the gradient of its own DML objective. All peers
are updated *simultaneously* from the same batch by one optimiser (same per-parameter SGD as
separate optimisers). The paper updates them in turn within a step (peer 2 sees peer 1's
prediction after peer 1's update); here every peer sees the others' predictions from before the
step, a target one step older. In eval mode the forward is peer 0's, so the loop's own
validation numbers, early stop and kept weights are peer 0's; `PeerTracker` does the same for
each other peer, by the loop's rule.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from experiments.common import Context
from experiments.logit_kd.config import Trial
from experiments.logit_kd.trials import row
from lib.data import Splits
from lib.distill import DML, TermMeans, term_ratios
from lib.runs import atomic_torch_save
from lib.train import Hook, TrainResult, evaluate


class Peers(nn.Module):
    """P ≥ 2 networks trained together; `forward` returns peer 0's logits (B, K)."""

    def __init__(self, peers: Sequence[nn.Module]):
        super().__init__()
        if len(peers) < 2:
            raise ValueError(f"peers: DML needs at least 2, got {len(peers)}")
        self.peers = nn.ModuleList(peers)
        self.logits: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.peers[0](x)
        self.logits = [p(x) for p in self.peers]  # P x (B, K), read by mutual_criterion
        return self.logits[0]


def mutual_criterion(peers: Peers, log: TermMeans | None = None):
    """`criterion(x, y, logits)` for `lib.train.train`: every peer's CE + mean mimicry KL.

    With `log` (a `TermMeans` over "dml", passed to the loop as a hook), each batch's mimicry
    terms summed over the peers are logged as `loss_dml`; the label term is then
    train_loss − loss_dml, the peers' CEs summed (`term_ratios` with weight 1 and CE weight 1)."""
    mimicry = DML()

    def criterion(x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        outs = peers.logits
        if not outs or outs[0] is not logits:
            raise RuntimeError("mutual_criterion: call it right after Peers.forward in training mode")
        total, kl = 0.0, 0.0
        for k, own in enumerate(outs):
            others = [mimicry(own, o) for j, o in enumerate(outs) if j != k]
            term = sum(others) / len(others)
            total = total + F.cross_entropy(own, y) + term
            kl = kl + term.detach()
        if log is not None:
            log.add({"dml": kl})
        return total

    return criterion


# the row columns of peer k >= 1, from its result entries `peer<k>_<key>` (PeerTracker.summary)
PEER_KEYS = {"test_acc": "test_acc", "val_acc": "val_acc", "final_test_acc": "final_test_acc",
             "early_stop_iter": "step", "selected_last": "selected_last"}


class PeerTracker(Hook):
    """A peer the loop does not evaluate (k ≥ 1): its val/test numbers at every evaluation, as
    columns `peer<k>_*`, and its weights at its own early-stop point, by the loop's rule."""

    def __init__(self, peer: nn.Module, k: int, early_stop_on: str):
        self.peer, self.prefix, self.step = peer, f"peer{k}_", 0
        self.result = TrainResult(early_stop_on=early_stop_on)

    def after_step(self, model: nn.Module, step: int) -> None:
        self.step = step

    def metrics(self, model: nn.Module, data: Splits) -> dict:
        val_loss, val_acc = evaluate(self.peer, data.val_x, data.val_y)
        test_loss, test_acc = evaluate(self.peer, data.test_x, data.test_y)
        point = dict(step=self.step, val_loss=val_loss, val_acc=val_acc, test_loss=test_loss,
                     test_acc=test_acc)
        if self.result.improves(point):
            self.result.best_state = {k: v.detach().clone() for k, v in self.peer.state_dict().items()}
        self.result.history.append(point)
        return {f"{self.prefix}{k}": v for k, v in point.items() if k != "step"}

    def summary(self) -> dict:
        """This peer's selected and final numbers (the keys of the trial's result.json)."""
        best, last, p = self.result.early_stop, self.result.final, self.prefix
        return {f"{p}test_acc": best["test_acc"], f"{p}val_acc": best["val_acc"],
                f"{p}final_test_acc": last["test_acc"], f"{p}step": best["step"],
                f"{p}selected_last": best["step"] == last["step"]}

    def state_dict(self) -> dict:
        return {"step": self.step, "history": self.result.history, "state": self.result.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.result.history = state["step"], state["history"]
        self.result.best_state = state["state"]


def train_dml(ctx: Context, trial: Trial, name: str) -> list[dict]:
    """`trial.peers` students of the setup's model trained together; one row per peer.

    Peer 0 starts from the student-alone init of the same seed, peer k from seed + 1000·k. The
    loop evaluates and selects peer 0; a `PeerTracker` each of the others.
    """
    setup, run = ctx.cfg.setup, ctx.run(trial)
    model = Peers([ctx.build(setup.model, trial.seed + 1000 * k) for k in range(trial.peers)])
    trackers = [PeerTracker(p, k, setup.train.early_stop_on)
                for k, p in enumerate(model.peers) if k]
    mimicry = TermMeans(["dml"])  # the loop's hook logging loss_dml (after the trackers)

    def after(model: Peers, res: TrainResult) -> dict:
        prefix = "peers.0."
        atomic_torch_save({k[len(prefix):]: v for k, v in res.best_state.items()
                           if k.startswith(prefix)}, run.path("best_peer0.pt"))
        # ratio_dml_start/_end: the peers' mimicry KLs over their CEs, both summed over peers
        out = term_ratios(res.history, {"dml": 1.0}, 1.0)
        for k, tracker in enumerate(trackers, start=1):
            atomic_torch_save(tracker.result.best_state, run.path(f"best_peer{k}.pt"))
            out.update(tracker.summary())
        return out

    res = ctx.train(run, stage="distill", name=name, seed=trial.seed, train_cfg=setup.train,
                    build=lambda: model, hooks_for=lambda m: [*trackers, mimicry],
                    criterion=mutual_criterion(model, mimicry), keep_best=True, after=after)
    rows = []
    for k in range(trial.peers):  # peer 0's numbers are the loop's own
        own = {col: res[f"peer{k}_{key}"] for col, key in PEER_KEYS.items()} if k else {}
        rows.append(row(ctx, trial, {**res, **own}, f"{name}-peer{k}", f"{trial.peers - 1} peer(s)",
                        peer=k))
    return rows
