#!/usr/bin/env bash
# The GPU slice (issue #14): one short run per experiment family on one GPU, <= 10 minutes in
# all; writes results/gpu_check/<gpu>.md and .json, exits non-zero if any slice failed.
#   scripts/gpu_check.sh                         # on a GPU: the full slice
#   scripts/gpu_check.sh --device cpu --size smoke   # the same code at a few steps (the tests)
# Python: $PYTHON, else the lab's .venv, else python3 (a GPU machine's own PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
exec "$PY" scripts/gpu_check.py "$@"
