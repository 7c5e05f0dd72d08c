"""Smoke run of experiments.network_slimming: stages, sizes, saved pruned models, reuse; and the
committed default trials' hashes."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from experiments.claims import followups_markdown
from experiments.network_slimming.claims import CLAIMS
from cli import ROOT, assert_report, assert_reused, run_experiment, smoke_fixture

COLUMNS = ["method", "stage", "lam", "prune_ratio", "seed", "params", "macs", "test_acc",
           "latency_ms", "latency_cl_ms", "widths"]
STAGES = {"baseline", "sparse", "pruned", "finetuned"}


smoke = smoke_fixture("network_slimming")


def vgg_params(widths: str, in_ch: int = 1, classes: int = 10) -> int:
    """Parameters of a bias-free conv3x3-BN VGG with these conv widths and a Linear head."""
    total, c = 0, in_ch
    for w in map(int, widths.split("-")):
        total += 9 * c * w + 2 * w  # kernel, BN γ and β
        c = w
    return total + c * classes + classes


@pytest.mark.smoke
def test_columns_stages_and_sizes(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.stage) == STAGES and set(trials.seed) == {0, 1}
    assert set(trials.lam) == {0.0, 0.01} and set(trials.prune_ratio) == {0.0, 0.3, 0.7}
    # per seed: 2 trained models, each pruned at 2 ratios and fine-tuned
    assert (trials.groupby("seed").size() == 2 * (1 + 2 * 2)).all()
    assert trials.run.is_unique
    # every model is timed; a fine-tuned row carries the latency of the pruned model it tuned
    assert trials[["latency_ms", "latency_cl_ms"]].notna().all().all()
    stage = trials.set_index(["seed", "lam", "prune_ratio", "stage"])
    tuned = stage.xs("finetuned", level="stage")
    pruned = stage.xs("pruned", level="stage").loc[tuned.index]
    assert (tuned[["latency_ms", "latency_cl_ms", "widths"]] == pruned[["latency_ms", "latency_cl_ms",
                                                                        "widths"]]).all().all()
    # the physically pruned model's parameter count is the formula's for its widths
    assert (trials.params == trials.widths.map(vgg_params)).all()
    for _, g in trials.groupby(["seed", "lam"]):
        by_ratio = g.groupby("prune_ratio")
        assert (by_ratio.params.nunique() == 1).all()  # fine-tuning keeps the pruned shapes
        params, macs = by_ratio.params.first(), by_ratio.macs.first()
        assert params.is_monotonic_decreasing and params.is_unique
        assert macs.is_monotonic_decreasing and macs.is_unique
    table = assert_report(out, "network_slimming", 20, "gamma_hist.png", "accuracy_vs_ratio.png")
    assert "| λ | λ at paper budget | pruned | trained acc % | pruned acc %" in table
    assert "Polarisation" in table


@pytest.mark.smoke
def test_accuracies_are_those_of_the_logged_curves(smoke):
    """test_acc is the final evaluation of the trial's metrics.csv, early_stop_test_acc the one
    at minimum validation loss; a pruned model is evaluated once, untrained."""
    base, _, trials = smoke
    for t in trials.itertuples():
        curve = pd.read_csv(base / "runs" / "smoke" / "network_slimming" / t.run / "metrics.csv")
        assert curve.test_acc.iloc[-1] == t.test_acc
        if t.stage == "pruned":
            assert len(curve) == 1 and curve.step.iloc[0] == 0
        else:
            assert curve.loc[curve.val_loss.idxmin()].test_acc == t.early_stop_test_acc


@pytest.mark.smoke
def test_training_learns_and_penalty_shrinks_gammas(smoke):
    _, out, trials = smoke
    trained = trials[trials.prune_ratio == 0]
    assert (trained.test_acc > 0.5).all()
    gammas = pd.read_csv(out / "gammas.csv")
    # after: one |γ| per channel the fine-tuned pruned model kept (its widths)
    after = gammas[gammas.stage == "finetuned"].groupby(["seed", "lam", "prune_ratio"]).size()
    tuned = trials[trials.stage == "finetuned"].set_index(["seed", "lam", "prune_ratio"])
    assert (after.loc[tuned.index] == tuned.widths.map(
        lambda w: sum(map(int, w.split("-"))))).all()
    gammas = gammas[gammas.stage == "trained"]  # before pruning
    assert (gammas.prune_ratio == 0).all()
    # the claims' polarisation column is the share of these |γ| under SMALL_GAMMA
    from experiments.network_slimming.config import SMALL_GAMMA
    share = gammas.groupby(["seed", "lam"]).gamma.apply(lambda g: (g.abs() < SMALL_GAMMA).mean())
    pd.testing.assert_series_equal(trained.set_index(["seed", "lam"]).gamma_small_share.sort_index(),
                                   share.sort_index(), check_names=False)
    median = gammas.groupby(["lam", "seed"]).gamma.median().unstack("lam")
    assert (median[0.01] < median[0.0] - 0.05).all()  # λ·sign(γ) pulls every γ towards 0
    low = trials[trials.prune_ratio == 0.3]
    pruned = low[low.stage == "pruned"].set_index(["seed", "lam"]).test_acc
    tuned = low[low.stage == "finetuned"].set_index(["seed", "lam"]).test_acc
    assert tuned.mean() > pruned.mean() + 0.1  # fine-tuning recovers what pruning lost


@pytest.mark.smoke
def test_saved_pruned_model_reloads_with_its_shapes_and_outputs(smoke):
    from lib import models
    from lib.prune import structured
    from lib.prune.surgery import channel_mask_model, load_pruned, prune_channels

    base, _, trials = smoke
    runs = base / "runs" / "smoke" / "network_slimming"
    sparse = trials[(trials.stage == "sparse") & (trials.seed == 0)].iloc[0]
    model = models.build("vgg_narrow", (1, 28, 28), 10)
    model.load_state_dict(torch.load(runs / sparse.run / "final.pt", weights_only=True))
    model.eval()
    x = torch.randn(8, 1, 28, 28)
    for stage, name in (("pruned", "pruned.pt"), ("finetuned", "final.pt")):
        row = trials[(trials.stage == stage) & (trials.seed == 0) & (trials.lam == sparse.lam)
                     & (trials.prune_ratio == 0.7)].iloc[0]
        loaded = load_pruned(runs / row.run / name).eval()
        convs = [m.out_channels for m in loaded.features if isinstance(m, torch.nn.Conv2d)]
        assert "-".join(map(str, convs)) == row.widths
        assert sum(p.numel() for p in loaded.parameters()) == row.params
    # the saved pruned model is exactly the surgery of the trained one, and its masked twin's
    keep = structured.select_global(structured.importance("bn_gamma", model), 0.7, 0.1)
    pruned = load_pruned(runs / trials[(trials.stage == "pruned") & (trials.seed == 0) & (
        trials.lam == sparse.lam) & (trials.prune_ratio == 0.7)].iloc[0].run / "pruned.pt").eval()
    with torch.no_grad():
        assert torch.allclose(pruned(x), prune_channels(model, keep).eval()(x), atol=1e-5)
        assert torch.allclose(pruned(x), channel_mask_model(model, keep).eval()(x), atol=1e-4)


@pytest.mark.smoke
def test_rerun_trains_nothing_and_keeps_the_table(smoke):
    base, out, trials = smoke
    table = (out / "table.md").read_text()
    assert_reused("network_slimming", base)
    # same numbers, and the footer still names the invocation that trained them
    assert (out / "table.md").read_text() == table
    again = pd.read_csv(out / "trials.csv")
    cols = ["run", "stage", "test_acc", "params", "widths", "threshold"]
    pd.testing.assert_frame_equal(again[cols], trials[cols])


def test_committed_default_hashes():
    """The default preset still names the committed trials' run folders (no behaviour change):
    every row of results/network_slimming/default/trials.csv, all four stages."""
    from experiments.network_slimming.config import Trial, for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    rows = pd.read_csv(ROOT / "results" / "network_slimming" / "default" / "trials.csv")
    assert set(rows.stage) == STAGES
    for r in rows.itertuples():
        trial = Trial(cfg.setup, int(r.seed), float(r.lam))
        if r.stage in ("pruned", "finetuned"):
            trial = replace(trial, prune_ratio=float(r.prune_ratio), min_keep=cfg.min_keep)
        if r.stage == "finetuned":
            trial = replace(trial, finetune=cfg.finetune)
        assert config_hash(trial) == r.run, r


def test_paper_scale_defaults_to_vgg19_on_cifar10():
    from experiments.network_slimming.__main__ import EXPERIMENT

    cfg, scale, _ = EXPERIMENT.parse(["--scale", "paper", "--device", "cpu"])
    assert (scale, cfg.setup.model, cfg.setup.dataset) == ("paper", "vgg19", "cifar10")
    cfg, _, _ = EXPERIMENT.parse(["--scale", "paper", "--model", "resnet56", "--device", "cpu"])
    assert cfg.setup.model == "resnet56"


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("network_slimming", smoke.out, monkeypatch)
    assert "baseline test accuracy" in text and "fine-tuning recovers" in text


# ---- the paper's claims (experiments/network_slimming/claims.py) on hand-made tables

def claims_table(base=0.90, sparse=0.899, tuned=0.901, small=(0.0, 0.8), ratio=0.7) -> pd.DataFrame:
    """3 seeds: the baseline (λ 0), the sparse model (λ 1e-2), each pruned at `ratio` and
    fine-tuned; `small`: share of |γ| < 0.01 at λ 0 and λ 1e-2."""
    rows = []
    for seed, e in enumerate((0.0, 0.002, -0.002)):
        for lam, trained, share in ((0.0, base, small[0]), (0.01, sparse, small[1])):
            stage = "sparse" if lam else "baseline"
            rows.append({"seed": seed, "lam": lam, "stage": stage, "prune_ratio": 0.0,
                         "test_acc": trained + e * (2 if lam else 1), "gamma_small_share": share + e})
            rows.append({"seed": seed, "lam": lam, "stage": "pruned", "prune_ratio": ratio,
                         "test_acc": 0.3})
            rows.append({"seed": seed, "lam": lam, "stage": "finetuned", "prune_ratio": ratio,
                         "test_acc": (tuned if lam else 0.85) + 3 * e})
    return pd.DataFrame(rows)


def verdicts(trials: pd.DataFrame) -> dict:
    from experiments.claims import evaluate
    from experiments.network_slimming.claims import CLAIMS

    return dict(zip(*evaluate(CLAIMS, trials)[["id", "verdict"]].T.values))


def test_claims_of_the_paper_as_it_states_them():
    assert verdicts(claims_table()) == {"sparsity_costs_little": "reproduced",
                                        "penalty_polarises_gamma": "reproduced",
                                        "pruned_70_matches_baseline": "reproduced"}


def test_claims_fail_when_the_table_says_so():
    v = verdicts(claims_table(sparse=0.87, tuned=0.88, small=(0.0, 0.0)))
    assert set(v.values()) == {"not reproduced"}
    assert verdicts(claims_table(ratio=0.5))["pruned_70_matches_baseline"] == "not tested at this scale"
    two = pd.concat([claims_table(), claims_table(sparse=0.85).assign(
        lam=lambda t: t.lam.where(t.lam == 0, 0.03))]).drop_duplicates(["seed", "lam", "stage", "prune_ratio"])
    assert verdicts(two)["sparsity_costs_little"] == "partly"  # λ 1e-2 costs nothing, 3e-2 does


@pytest.mark.smoke
def test_out_writes_the_report_elsewhere_and_leaves_the_scale_folder(smoke):
    # --out: a follow-up run's report goes to its own folder; the scale's folder is not touched
    base, out, trials = smoke
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    followup = out / "followup" / "same"
    run_experiment("network_slimming", "--scale", "smoke", "--report-only", "--out",
                   str(followup), base=base, wandb=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert (followup / "table.md").read_text() == (out / "table.md").read_text()
    assert (followup / "claims.md").exists() and (followup / "run.json").exists()
    cols = ["run", "stage", "test_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(followup / "trials.csv")[cols], trials[cols])
    # followups.md: the follow-up's tested claims, each with the same verdict as the main results
    text = followups_markdown(CLAIMS, out, "smoke")
    main = pd.read_csv(out / "claims.csv")
    tested = main[main.verdict != "not tested at this scale"]
    assert "## same" in text and len(tested)
    for r in tested.itertuples():
        assert f"| {r.id} | **{r.verdict}** | {r.verdict} |" in text
