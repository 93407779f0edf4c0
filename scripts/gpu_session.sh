#!/usr/bin/env bash
# The one prepared command for a lent GPU machine, sized to BUDGET_S (default 480 s, the 8 minutes
# one device call should take): the wheel set installs (.whl/, made by bash scripts/gpu_wheels.sh
# on a machine that reaches a registry), then the GPU check's stages (benchmarks/gpu_check.py:
# demos, GPU encode, bf16 ZeRO-2 training at uva-S with samples/s, data wait, MFU and peak
# memory, resume, export, the policy closed loop on 5 seeds on the GPU, policy latency at uva-B
# for eager, graph and compile), then as much of the PushT recipe (benchmarks/gpu_pusht_recipe.py)
# as the remaining seconds allow, its steps sized from the check's measured samples/s, scored on
# the 50 test seeds. Every stage writes OUT/<part>/NN_<stage>.json as it ends, so a crash or a
# cut still returns every stage before it; each part runs under `timeout`.
#
#   run: OUT=$OUT bash scripts/gpu_session.sh                       (the first call, <= 8 min)
#   rerun after a fix: OUT=$OUT BUDGET_S=230 RECIPE=0 bash scripts/gpu_session.sh  (<= 4 min)
#   on a CPU, every stage tiny: OUT=/tmp/g QUICK=1 bash scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/uva_gpu_out}; BUDGET_S=${BUDGET_S:-480}; CHECK_S=${CHECK_S:-270}; RECIPE=${RECIPE:-1}
PY=${PYTHON:-python3}
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
mkdir -p "$OUT"
say() { echo "[gpu-session +$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/session.log"; }

rc=0
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=${UVA_WHEEL_SITE:-/tmp/uva_wheels}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    > "$OUT/00_wheels.log" 2>&1 || rc=$?
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "{\"stage\": \"wheels\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start ))}" > "$OUT/00_wheels.json"
say "wheels rc $rc"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_ALLOW_FILE_STORE=true PYTHONUNBUFFERED=1
"$PY" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" \
  > "$OUT/00_python.txt" 2>&1

QUICKARGS=()
[ "${QUICK:-0}" = 1 ] && QUICKARGS=(--quick --device cpu --workers 1)
budget=$(( $(left) < CHECK_S ? $(left) : CHECK_S ))
say "check: ${budget}s"
timeout -k 10 "$budget" "$PY" benchmarks/gpu_check.py "${QUICKARGS[@]}" --out "$OUT/check" --json "$OUT/check.json" \
  > "$OUT/check.log" 2>&1
say "check rc $? (stages: $(ls "$OUT/check" 2>/dev/null | tr '\n' ' '))"

if [ "$RECIPE" = 1 ]; then
  # the check trains uva-S with 6 x 6 tokens per frame; the recipe's 12 x 12 cost about 4x per sample
  sps=$("$PY" - "$OUT/check" <<'PYEOF'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/*_train.json")):
    for stage, what, value in json.load(open(f))["rows"]:
        if what.startswith("samples/s"):
            print(max(1.0, float(value) / 4)); sys.exit()
print(0)
PYEOF
)
  budget=$(( $(left) - 15 ))
  if [ "${sps%.*}" -gt 0 ] && [ "$budget" -ge 150 ] || [ "${QUICK:-0}" = 1 ]; then
    say "recipe: ${budget}s at an expected ${sps} samples/s"
    RARGS=(--budget-s $(( budget - 20 )) --expect-samples-per-s "${sps/#0/1}")
    [ "${QUICK:-0}" = 1 ] && RARGS=(--quick --device cpu --workers 1)
    timeout -k 10 "$budget" "$PY" benchmarks/gpu_pusht_recipe.py "${RARGS[@]}" --out "$OUT/recipe" \
      --json "$OUT/recipe.json" > "$OUT/recipe.log" 2>&1
    say "recipe rc $? (stages: $(ls "$OUT/recipe" 2>/dev/null | tr '\n' ' '))"
  else
    say "recipe skipped: ${budget}s left, expected ${sps} samples/s"
  fi
fi
grep -h "^\[gpu-check\]\|^\[gpu-pusht\]" "$OUT"/*.log | tee -a "$OUT/session.log"
say "done"
