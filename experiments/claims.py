"""A paper's claims as checks that the code evaluates on an experiment's trials table.

Each experiment lists its paper's claims in `experiments/<name>/claims.py` as `CLAIMS`: an id, the
claim in the paper's words with the paper's own numbers, and a function of the trials table
(`trials.csv`) that returns a `Verdict`. Every verdict follows ONE rule, stated here:

- A comparison of arm A with arm B over seeds has a difference d = mean(A) − mean(B) and a
  standard error se: paired by seed, se = sd(A_s − B_s) / √n, when both arms ran the same seeds
  (same init and data order), else Welch's √(sd_A²/n_A + sd_B²/n_B).
- **A is better than B** (the paper says A improves on, beats, outperforms B) counts when d > 0
  and d > 2·se.
- **A is no worse than B** (the paper says A matches B, is at no loss, stays within t of B)
  counts when d ≥ −t, with t the tolerance the paper itself states; where it states none,
  when d ≥ −2·se (no loss larger than twice its standard error).
- One seed gives no standard error: a "better" comparison cannot count with n = 1.
- A claim made of several comparisons (one per sparsity level, per method, ...) is
  **reproduced** when every comparison counts, **partly** when some do, **not reproduced** when
  none does, and **not tested at this scale** when the trials it needs were not run.

Thresholds are never chosen per claim: the only numbers in a check are the paper's own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from experiments.provenance import footer_line, read
from lib.runs import atomic_write_text

REPRODUCED, PARTLY, NOT, UNTESTED = ("reproduced", "partly", "not reproduced",
                                     "not tested at this scale")
VERDICTS = (REPRODUCED, PARTLY, NOT, UNTESTED)


@dataclass(frozen=True)
class Comparison:
    """One comparison of arm A with arm B, in the table's unit times `scale` (points)."""

    label: str
    kind: str  # "better" or "no_worse"
    mean_a: float
    sd_a: float
    n_a: int
    mean_b: float
    sd_b: float
    n_b: int
    diff: float
    se: float
    paired: bool
    tolerance: float | None = None

    @property
    def counts(self) -> bool:
        if self.kind == "better":
            return self.diff > 0 and not math.isnan(self.se) and self.diff > 2 * self.se
        limit = self.tolerance if self.tolerance is not None else 2 * self.se
        return not math.isnan(limit) and self.diff >= -limit

    def text(self) -> str:
        rule = ("Δ > 2·se" if self.kind == "better" else
                f"Δ ≥ −{self.tolerance:g}" if self.tolerance is not None else "Δ ≥ −2·se")
        se = "n/a" if math.isnan(self.se) else f"{self.se:.2f}"
        return (f"{self.label}: {self.mean_a:.2f} ± {_sd(self.sd_a)} (n={self.n_a}) vs "
                f"{self.mean_b:.2f} ± {_sd(self.sd_b)} (n={self.n_b}), Δ {self.diff:+.2f}, se {se}"
                f"{' paired' if self.paired else ''}, {rule}: {'yes' if self.counts else 'no'}")


def _sd(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def _series(x) -> pd.Series:
    return x.astype(float) if isinstance(x, pd.Series) else pd.Series(x, dtype=float)


def per_seed(trials: pd.DataFrame, metric: str = "test_acc", **where) -> pd.Series:
    """`metric` of the rows matching `where` (column=value), one value per seed (index "seed";
    several rows of one seed are averaged)."""
    rows = trials
    for col, value in where.items():
        if col not in rows:
            return pd.Series(dtype=float, index=pd.Index([], name="seed"))
        rows = rows[rows[col] == value]
    return rows.groupby("seed")[metric].mean().astype(float)


def levels(trials: pd.DataFrame, lo: int = 1, hi: int | None = None) -> list[int]:
    """The pruning levels of `trials` from `lo` to `hi` (inclusive; no upper bound when None)."""
    return sorted(int(lv) for lv in trials.level.unique() if lo <= lv and (hi is None or lv <= hi))


def left(trials: pd.DataFrame, level: int) -> str:
    """The mean fraction of weights left at `level`, for labels: '21.1%'."""
    return f"{trials[trials.level == level].weights_left.mean():.1%}"


def compare(label: str, a, b, kind: str = "better", tolerance: float | None = None,
            scale: float = 100.0) -> Comparison:
    """Compare arm `a` with arm `b`: Series indexed by "seed" (`per_seed`; paired when both
    ran the same seeds) or plain sequences (unpaired). Values are multiplied by `scale`
    (fractions -> points)."""
    a, b = (_series(a) * scale).dropna(), (_series(b) * scale).dropna()
    paired = (a.index.name == "seed" == b.index.name and len(a) > 1
              and set(a.index) == set(b.index))
    if paired:
        d = a - b.loc[a.index]
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    else:
        va = a.var(ddof=1) / len(a) if len(a) > 1 else math.nan
        vb = b.var(ddof=1) / len(b) if len(b) > 1 else (0.0 if len(b) == 1 else math.nan)
        se = math.sqrt(va + vb) if not (math.isnan(va) or math.isnan(vb)) else math.nan
    return Comparison(label, kind, a.mean(), a.std(ddof=1) if len(a) > 1 else math.nan, len(a),
                      b.mean(), b.std(ddof=1) if len(b) > 1 else math.nan, len(b),
                      a.mean() - b.mean(), se, paired, tolerance)


def better(label: str, a, b, scale: float = 100.0) -> Comparison:
    """The paper says A is better than B (see the rule above)."""
    return compare(label, a, b, "better", scale=scale)


def no_worse(label: str, a, b, tolerance: float | None = None, scale: float = 100.0) -> Comparison:
    """The paper says A matches / is no worse than B, within `tolerance` where it states one."""
    return compare(label, a, b, "no_worse", tolerance, scale)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    parts: tuple[Comparison, ...] = ()
    note: str = ""

    @property
    def evidence(self) -> str:
        text = "; ".join(p.text() for p in self.parts)
        return f"{text}. {self.note}".strip(" .") + "." if self.note or text else ""


def judge(parts: Sequence[Comparison], note: str = "") -> Verdict:
    """All parts count: reproduced; some: partly; none: not reproduced; no parts: untested."""
    parts = tuple(p for p in parts if p.n_a and p.n_b)  # an arm with no trials tests nothing
    if not parts:
        return Verdict(UNTESTED, (), note or "the trials this claim needs were not run")
    hits = sum(p.counts for p in parts)
    verdict = REPRODUCED if hits == len(parts) else PARTLY if hits else NOT
    return Verdict(verdict, parts, note)


def untested(why: str) -> Verdict:
    return Verdict(UNTESTED, (), why)


@dataclass(frozen=True)
class Claim:
    """A paper's claim: `id`, its words and numbers (`paper`), and the check of our trials."""

    id: str
    paper: str
    check: Callable[[pd.DataFrame], Verdict]
    source: str = ""  # where the paper says it (figure, table, section)
    why_not: str = field(default="", compare=False)  # the experiment that shows why, if not reproduced


def evaluate(claims: Sequence[Claim], trials: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: id, paper's words, verdict, evidence."""
    rows = []
    for c in claims:
        v = c.check(trials)
        if v.verdict not in VERDICTS:
            raise ValueError(f"claim {c.id}: verdict '{v.verdict}' is not one of {VERDICTS}")
        rows.append({"id": c.id, "claim": c.paper, "source": c.source, "verdict": v.verdict,
                     "evidence": v.evidence, "n_parts": len(v.parts),
                     "n_counting": sum(p.counts for p in v.parts)})
    return pd.DataFrame(rows, columns=["id", "claim", "source", "verdict", "evidence",
                                       "n_parts", "n_counting"])


def write_claims(claims: Sequence[Claim], trials: pd.DataFrame, out_dir: Path,
                 title: str) -> pd.DataFrame:
    """claims.csv and claims.md in `out_dir`; returns the table."""
    table = evaluate(claims, trials)
    atomic_write_text(Path(out_dir) / "claims.csv", table.to_csv(index=False))
    atomic_write_text(Path(out_dir) / "claims.md", markdown(table, title))
    return table


def markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"# Claims: {title}\n",
             "Verdicts follow one rule (experiments/claims.py): an effect counts when its sign "
             "holds for the mean over seeds and it exceeds twice its standard error, or, for a "
             "no-loss claim, when the loss stays within the paper's stated tolerance (else "
             "within 2·se). Numbers in points (accuracy × 100).\n",
             "| claim | the paper says | verdict | evidence (ours) |", "|---|---|---|---|"]
    for r in table.itertuples():
        src = f" ({r.source})" if r.source else ""
        lines.append(f"| {r.id} | {_cell(r.claim)}{src} | **{r.verdict}** | {_cell(r.evidence)} |")
    return "\n".join(lines) + "\n\n" + summary(table) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary(table: pd.DataFrame) -> str:
    counts = table.verdict.value_counts()
    return ("Total: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS) + ".")


def experiments_with_claims() -> list[str]:
    """Every experiment that declares its paper's claims (experiments/<name>/claims.py)."""
    return sorted(p.parent.name for p in Path(__file__).parent.glob("*/claims.py"))


FOLLOWUP = "followup"  # results/<experiment>/<scale>/followup/<name>/: a run with changed flags


def followup_dirs(out_dir: Path) -> list[Path]:
    """The follow-up runs beside the results in `out_dir` (each written with --out), by name."""
    return sorted(p.parent for p in (Path(out_dir) / FOLLOWUP).glob("*/trials.csv"))


def followups_markdown(claims: Sequence[Claim], out_dir: Path, title: str) -> str | None:
    """followups.md for the results in `out_dir`: for every follow-up run, each claim it tests,
    its verdict there (recomputed from its trials.csv by the same rule) beside the verdict of
    the results in `out_dir`, and the evidence. None when there is no follow-up."""
    runs, main_csv = followup_dirs(out_dir), Path(out_dir) / "trials.csv"
    if not runs:
        return None
    ref = evaluate(claims, pd.read_csv(main_csv)) if main_csv.exists() else None
    main = {} if ref is None else dict(zip(ref.id, ref.verdict))
    lines = [f"# Follow-up runs: {title}\n",
             "Each follow-up reruns part of the grid with the flags its command names, to show "
             "what changes a verdict (its own trials.csv, table.md, claims.md and run.json are in "
             f"`{FOLLOWUP}/<name>/`). Its verdicts follow the same rule, recomputed from its "
             "trials.csv; the claims it does not test are left out. The sentence under each name "
             "counts every invocation that trained a trial of its table: where a follow-up reuses "
             "the main run's trials (same hashes), the main run is counted too.\n"]
    for run in runs:
        table = evaluate(claims, pd.read_csv(run / "trials.csv"))
        table = table[table.verdict != UNTESTED]
        lines += [f"## {run.name}\n", footer_line(read(run)) + "\n",
                  "| claim | verdict here | verdict in the main results | evidence here |",
                  "|---|---|---|---|"]
        lines += [f"| {r.id} | **{r.verdict}** | {main.get(r.id, 'n/a')} | {_cell(r.evidence)} |"
                  for r in table.itertuples()]
        if table.empty:
            lines.append("| (none of the claims) | | | |")
        lines.append("")
    return "\n".join(lines)
