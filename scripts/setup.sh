#!/usr/bin/env bash
# Create .venv with CPU torch and the project (+ test extras). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.11,<2.15"
.venv/bin/python -m pip install -q -e ".[test]"
echo "[setup] ready: $(.venv/bin/python -c 'import torch, deepspeed, ray; print("torch", torch.__version__, "deepspeed", deepspeed.__version__, "ray", ray.__version__)' 2>/dev/null | tail -1)"
