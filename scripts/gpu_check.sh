#!/usr/bin/env bash
# One command that checks a GPU machine end to end and prints one table (benchmarks/gpu_check.py:
# demos -> GPU encode -> 200-step bf16 training at uva-S -> resume -> policy latency at uva-B ->
# 5-seed PushT closed loop on the GPU). Made for machines without a package registry: when .whl/
# holds the wheel set (bash scripts/gpu_wheels.sh, run where pip reaches a registry), it is
# installed into a scratch folder first; the machine's own torch, numpy, opencv & co. are used.
#
#   bash scripts/gpu_check.sh [--skip-compile] [--json FILE] [--work DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${UVA_WHEEL_SITE:-/tmp/uva_wheels}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_ALLOW_FILE_STORE=true PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
