"""Execute a notebook against results (used by the smoke tests)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(name: str, scale: str = "smoke") -> nbformat.NotebookNode:
    """Run notebooks/<name>.ipynb with LAB_SCALE=scale; raises on any failing cell."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    os.environ["LAB_SCALE"] = scale
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb
