"""Keeping the weights the selection rule picks: the evaluation with the lowest validation loss.

`lib.train` reports the test accuracy at the best validation evaluation but keeps only the final
weights. A chain (Born-Again, Label Refinery, TA-KD) must hand the *selected* network down, so
`BestWeights` copies a network's weights at every evaluation that improves its validation loss.
With a `prefix` it also reports that network's val/test numbers as columns (the DML peers).
"""
from __future__ import annotations

from torch import Tensor, nn

from lib.data import Splits
from lib.runs import atomic_torch_save
from lib.train import Hook, evaluate


class BestWeights(Hook):
    """Copy `net`'s state at its lowest validation loss (first one on ties, as the loop)."""

    def __init__(self, net: nn.Module, prefix: str = ""):
        self.net, self.prefix = net, prefix
        self.step, self.best = 0, {"step": -1, "val_loss": float("inf")}
        self.state: dict[str, Tensor] | None = None

    def after_step(self, model: nn.Module, step: int) -> None:
        self.step = step

    def metrics(self, model: nn.Module, data: Splits) -> dict:
        val_loss, val_acc = evaluate(self.net, data.val_x, data.val_y)
        row = {"step": self.step, "val_loss": val_loss, "val_acc": val_acc}
        if self.prefix:  # a network the loop does not evaluate itself (a DML peer)
            row["test_loss"], row["test_acc"] = evaluate(self.net, data.test_x, data.test_y)
        if val_loss < self.best["val_loss"]:
            self.best = row
            self.state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        if not self.prefix:
            return {}
        return {f"{self.prefix}{k}": v for k, v in row.items() if k != "step"}

    def state_dict(self) -> dict:
        return {"step": self.step, "best": self.best, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.best, self.state = state["step"], state["best"], state["state"]

    def save(self, path) -> None:
        """Write the selected weights (a plain state dict)."""
        if self.state is None:
            raise RuntimeError("BestWeights: no evaluation yet")
        atomic_torch_save(self.state, path)


def same_selection(hook: BestWeights, history: list[dict]) -> bool:
    """True when the hook kept the evaluation the loop's early stop picks (same rule, same data)."""
    best = min(history, key=lambda r: r["val_loss"])
    return best["step"] == hook.best["step"]

