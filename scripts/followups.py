"""Write results/<experiment>/<scale>/followups.md for every experiment with follow-up runs.

    python scripts/followups.py [--scale default] [--check]

A follow-up run is an experiment run with changed flags whose report went to
results/<experiment>/<scale>/followup/<name>/ (`--out`): e.g. a longer schedule, another loss
weight, to show what changes a claim's verdict. followups.md lists, for each, the claims it tests
with their verdict there and in the main results, recomputed from the trials tables by the
experiment's claims.py. The READMEs include it; `make readmes` runs this first. `--check` writes
nothing and exits 1 when a followups.md is out of date (the test suite runs it).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.claims import experiments_with_claims, followups_markdown  # noqa: E402
from lib.runs import atomic_write_text, results_dir  # noqa: E402


def write(scale: str, check: bool = False) -> list[Path]:
    """followups.md of every experiment at `scale` that has follow-ups; the stale ones (check)
    or the written ones."""
    touched = []
    for name in experiments_with_claims():
        out = results_dir(name, scale)
        text = followups_markdown(importlib.import_module(f"experiments.{name}.claims").CLAIMS,
                                  out, f"{name}, {scale} scale")
        file = out / "followups.md"
        if text is None or (file.exists() and file.read_text() == text):
            continue
        touched.append(file)
        if not check:
            atomic_write_text(file, text)
    return touched


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="default", help="smoke, default or paper")
    p.add_argument("--check", action="store_true", help="only report followups.md files that are out of date")
    a = p.parse_args(argv)
    touched = write(a.scale, a.check)
    if a.check and touched:
        print("out of date (run `make readmes`): " + ", ".join(map(str, touched)))
        return 1
    print(("stale: " if a.check else "wrote: ") + (", ".join(map(str, touched)) or "nothing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
