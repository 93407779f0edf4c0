#!/usr/bin/env bash
# The PushT GPU recipe (benchmarks/gpu_pusht_recipe.py): 200 expert demos on the machine's cores,
# GPU encode, uva-S training with 12 x 12 tokens per frame, closed loop on the 50 test seeds, in
# about 25 minutes of one H100. Like scripts/gpu_check.sh it runs where no package registry is
# reachable: the wheel set in .whl/ (bash scripts/gpu_wheels.sh) is installed into a scratch folder.
#
#   bash scripts/gpu_pusht.sh [--steps N] [--batch B] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${UVA_WHEEL_SITE:-/tmp/uva_wheels}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_ALLOW_FILE_STORE=true PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_pusht_recipe.py "$@"
