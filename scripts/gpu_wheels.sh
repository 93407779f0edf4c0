#!/usr/bin/env bash
# The wheel set the GPU check (scripts/gpu_check.sh) needs on a GPU machine that reaches no
# package registry and already has python3.12, torch, numpy, safetensors, einops, pyyaml, tqdm,
# opencv-headless, pandas, requests & co. (../shared/DESIGN.md lists them). Everything else
# travels as wheels, with the source tree, in at most 64 MiB.
#
#   bash scripts/gpu_wheels.sh [OUT=.whl]      # run here (needs the project's .venv and a registry)
#
# Versions are the ones this project's .venv runs, so the GPU machine runs the same code. Only
# what the check imports travels: DeepSpeed (built here as a pure-Python wheel: its kernels are
# JIT-built on demand, and the check needs none), MLflow's client (mlflow-skinny with a file
# store, not the server), the PushT simulator (gym-pusht, pymunk, pygame, gymnasium, shapely),
# webdataset (the training loader's tar stages) and their missing dependencies. Not ray, decord,
# av or submitit: the check encodes in-process from frames in memory and trains without them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
BINARY=(mlflow-skinny databricks-sdk fastapi starlette opentelemetry-api opentelemetry-sdk
        opentelemetry-semantic-conventions opentelemetry-proto gitpython gitdb smmap sqlparse cachetools
        pydantic pydantic-core annotated-types typing-inspection importlib-metadata python-dotenv
        google-auth pyasn1 pyasn1-modules hjson webdataset braceexpand
        gym-pusht pymunk cffi pycparser pygame gymnasium farama-notifications shapely)
version() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pins=()
for name in "${BINARY[@]}"; do
  v=$(version "$name")
  [ -n "$v" ] || { echo "error: $name is not installed in $PY's environment (run scripts/setup.sh)" >&2; exit 1; }
  pins+=("$name==$v")
done
mkdir -p "$OUT"
rm -f "$OUT"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$OUT" "${pins[@]}"
# DeepSpeed publishes only an sdist; without CUDA here it builds as pure Python (ops JIT-built there)
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "deepspeed==$(version deepspeed)"
echo "[gpu-wheels] $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
