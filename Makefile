# Model-compression reproduction lab. `make help` lists the targets.
# Every target that needs Python depends on `setup`, so any of them works first on a fresh clone.
SCALE ?= default
PY := .venv/bin/python
STAMP := .venv/.requirements-installed
# make test: pytest-xdist workers (auto: one per core), each on one torch thread, a test file per
# worker (its module fixtures run once); TEST_JOBS=0 runs the suite in this process
TEST_JOBS ?= auto
PYTEST_PAR := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

.PHONY: help setup data test test-paper gpu-check test-fast lottery lottery-ablation slimming rethinking filter-pruning kd \
        feature-kd rkd quantization pipeline all-results claims readmes notebooks benchmark sync clean-smoke

help:
	@echo "make setup                 venv + pinned requirements + Fashion-MNIST (idempotent)"
	@echo "make test                  unit tests + smoke runs of every experiment + notebooks (< 10 min)"
	@echo "make test-fast             the unit tier only (< 1 min)"
	@echo "make test-paper            every paper preset end to end on synthetic data, and the GPU slice on the CPU"
	@echo "make gpu-check             the GPU slice: one short run per family on one GPU -> results/gpu_check/"
	@echo "make lottery-ablation      Deconstructing Lottery Tickets (the flagship)   [SCALE=smoke|default|paper]"
	@echo "make lottery               Lottery Ticket Hypothesis: IMP, ticket vs reinit [SCALE=...]"
	@echo "make slimming              Network Slimming: BN-gamma sparsity, global pruning, fine-tuning"
	@echo "make rethinking            Rethinking the value of pruning: fine-tune vs scratch-E/B, ticket vs random init"
	@echo "make filter-pruning        filter importance: l1, l2, fpgm, apoz, bn_gamma, random"
	@echo "make kd                    logit distillation: KD, DML, Born-Again, Label Refinery, TA-KD"
	@echo "make feature-kd            FitNet, Attention Transfer and FSP, with and without KD"
	@echo "make rkd                   Relational KD (distance, angle) and Similarity-Preserving KD"
	@echo "make quantization          PTQ sweep, QAT, int8 through torch.ao, precision curve"
	@echo "make pipeline              teacher -> MobileNet student (KD) -> filter pruning -> quantization"
	@echo "make all-results           every experiment at SCALE, one after the other"
	@echo "make claims                every paper claim, its verdict and evidence, on results/ (SCALE=...)"
	@echo "make readmes               write followups.md, copy results (claims.md, run.json...) into the READMEs' includes"
	@echo "make notebooks             execute the analysis notebooks on results/ (SCALE=...)"
	@echo "make benchmark             lab vs bare PyTorch, packed trials, bf16, IMP job -> results/benchmark/"
	@echo "                           (OPEN_LTH=<open_lth checkout>: the IMP job in open_lth too)"
	@echo "make sync                  upload offline wandb runs (needs 'wandb login')"
	@echo "make clean-smoke           delete smoke results and smoke runs"

setup: $(STAMP) data

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

data:
	@bash scripts/get_data.sh

test: setup
	$(PYTEST_PAR) -q tests -m "not paper"

test-paper: setup
	$(PY) -m pytest -q tests -m paper

gpu-check: setup
	scripts/gpu_check.sh

test-fast: setup
	$(PY) -m pytest -q tests -m "not smoke and not slow and not paper"

lottery: setup
	$(PY) -m experiments.lottery_ticket --scale $(SCALE)

lottery-ablation: setup
	$(PY) -m experiments.lottery_ablation --scale $(SCALE)

quantization: setup
	$(PY) -m experiments.quantization --scale $(SCALE)

slimming: setup
	$(PY) -m experiments.network_slimming --scale $(SCALE)

rethinking: setup
	$(PY) -m experiments.rethinking_pruning --scale $(SCALE)

filter-pruning: setup
	$(PY) -m experiments.filter_importance --scale $(SCALE)

kd: setup
	$(PY) -m experiments.logit_kd --scale $(SCALE)

feature-kd: setup
	$(PY) -m experiments.feature_kd --scale $(SCALE)

rkd: setup
	$(PY) -m experiments.rkd --scale $(SCALE)

pipeline: setup
	$(PY) -m experiments.compression_pipeline --scale $(SCALE)

all-results: lottery lottery-ablation slimming rethinking filter-pruning kd feature-kd rkd \
             quantization pipeline

claims: setup
	$(PY) scripts/claims.py --scale $(SCALE) --verbose

readmes: setup
	$(PY) scripts/followups.py --scale $(SCALE)
	$(PY) scripts/sync_readmes.py

notebooks: setup
	LAB_SCALE=$(SCALE) $(PY) scripts/run_notebooks.py

# OPEN_LTH=<checkout of github.com/facebookresearch/open_lth>: also time its IMP job
OPEN_LTH ?=
benchmark: setup
	$(PY) scripts/benchmark.py $(if $(OPEN_LTH),--open-lth $(OPEN_LTH))

# the trials' runs and each report's run (job type `report`), from $(WANDB_DIR)/wandb/
WANDB ?= .venv/bin/wandb
WANDB_DIR ?= .
sync: setup
	@if ls -d $(WANDB_DIR)/wandb/offline-run-* >/dev/null 2>&1; then \
	  $(WANDB) sync --include-offline $(WANDB_DIR)/wandb/offline-run-*; \
	else echo "no offline runs under $(WANDB_DIR)/wandb/"; fi

clean-smoke:
	rm -rf results/*/smoke runs/smoke
