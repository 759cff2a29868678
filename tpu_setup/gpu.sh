#!/usr/bin/env bash
# One-command GPU set-up and run (NVIDIA, CUDA 13 wheels from PyPI; no system CUDA needed).
#
#   tpu_setup/gpu.sh [--dry-run] [--venv DIR] [-- EXPERIMENT FLAGS]
#
# Creates a Python 3.11 venv, installs the pinned requirements and the CUDA build of the same
# JAX version, prints the visible devices, then (if flags follow `--`) runs
#   python -m experiments.train EXPERIMENT FLAGS
# e.g. tpu_setup/gpu.sh -- --config experiments/configs/qwen2_5_gsm8k_grpo.py --workdir runs/q
# --dry-run prints the commands without running them. See docs/scaling.md.
set -euo pipefail

DRY_RUN=0
VENV=.venv  # the Makefile's venv; the CUDA jax replaces its CPU jax
PYTHON=${PYTHON:-python3.11}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --venv) VENV="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown flag $1 (experiment flags go after --)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JAX_VERSION="$(sed -n 's/^jax==\([^ #]*\).*/\1/p' "$ROOT/requirements.txt")"

run() {
  printf '%q ' "$@" | sed 's/ $//'
  echo
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

cd "$ROOT"
run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/pip" install -q -U pip
run "$VENV/bin/pip" install -q -r requirements.txt
run "$VENV/bin/pip" install -q "jax[cuda13]==$JAX_VERSION"
run "$VENV/bin/python" -c "import jax; print(jax.devices())"
if [[ $# -gt 0 ]]; then
  run "$VENV/bin/python" -m experiments.train "$@"
fi
