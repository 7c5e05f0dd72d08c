"""Print every experiment's paper claims with the verdict our trials give, one line each.

    python scripts/claims.py [--scale default] [--verbose]

Each verdict is recomputed from results/<experiment>/<scale>/trials.csv by the experiment's
`claims.py` (the one rule of experiments/claims.py), so it reflects the code as it is now.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.claims import VERDICTS, evaluate, experiments_with_claims  # noqa: E402
from lib.runs import results_dir  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="default", help="smoke, default or paper")
    p.add_argument("--verbose", action="store_true", help="print the evidence under each claim")
    a = p.parse_args(argv)
    tables = []
    for name in experiments_with_claims():
        trials_csv = results_dir(name, a.scale) / "trials.csv"
        if not trials_csv.exists():
            print(f"{name:<22} no results at scale {a.scale} ({trials_csv} missing)")
            continue
        claims = importlib.import_module(f"experiments.{name}.claims").CLAIMS
        table = evaluate(claims, pd.read_csv(trials_csv)).assign(experiment=name)
        for r in table.itertuples():
            print(f"{name:<22} {r.id:<34} {r.verdict:<25} ({r.n_counting}/{r.n_parts} comparisons count)")
            if a.verbose:
                print(f"{'':<22}   {r.evidence}")
        tables.append(table)
    if not tables:
        print("no claims evaluated")
        return 1
    allc = pd.concat(tables).verdict.value_counts()
    total = sum(allc.get(v, 0) for v in VERDICTS)
    print(f"\n{total} claims: " + " / ".join(f"{allc.get(v, 0)} {v}" for v in VERDICTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
