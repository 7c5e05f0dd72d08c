"""Execute every analysis notebook in place on results/<experiment>/$LAB_SCALE (default scale).

    LAB_SCALE=default python scripts/run_notebooks.py [name ...]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    scale = os.environ.setdefault("LAB_SCALE", "default")
    for name in names:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        if not (ROOT / "results" / name / scale / "trials.csv").exists():
            print(f"skip {name}: no results/{name}/{scale}/trials.csv (run its make target first)")
            continue
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        nbformat.write(nb, path)
        print(f"executed {path.relative_to(ROOT)} on {scale} results")
