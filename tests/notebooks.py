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


def smoke_output_text(name: str, out: Path, monkeypatch) -> str:
    """Run notebooks/<name>.ipynb at smoke scale on the smoke results folder `out`
    (`<results>/<name>/smoke`; `<results>` becomes LAB_RESULTS_DIR) and return the text of its
    code cells' outputs, concatenated."""
    assert out.parts[-2:] == (name, "smoke"), out
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))
    monkeypatch.setenv("LAB_SCALE", "smoke")  # execute sets it again; restored after the test
    nb = execute(name, scale="smoke")
    return "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
