#!/usr/bin/env bash
# The embedded default, end to end on this machine: set up; scripts/default_data.sh (robot demos:
# synthetic pusher, a franka-shaped two-camera set with instructions, PushT expert demos from the
# gym-pusht simulator; action-free human video; latent shards of all with the shipped VAE on a
# local Ray; the joint model pretrained on the mix with local DeepSpeed, MLflow store in the run
# folder); fine-tune it on the PushT demos, export the policy bundle and print its closed-loop
# PushT score (50 test seeds); fine-tune it to franka (held-out action error). Everything lands
# under runs/default/; a rerun keeps each step made before with the same sizes and inputs
# (scripts/once.sh). What it trades to fit 25 minutes on 2 cores: its pretraining (600 steps) is a
# seventh of its PushT fine-tune (4300 steps on 100 demos), which overwrites most of it; the value
# of pretraining shows where pretraining is 5x the fine-tune and the labelled demos are few
# (benchmarks/bench_pretraining_value.py, README "Does pretraining pay?").
# Sizes can be turned down for a quick check, e.g.
#   PUSHT_EPISODES=8 FRANKA_EPISODES=4 PRETRAIN_STEPS=40 FT_STEPS="20 20" FRANKA_FT_STEPS="10 10" \
#   EVAL_SEEDS=100000:100004 bash scripts/run_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN=.venv/bin  # the project's console scripts (uva-*)
OUT=${OUT:-runs/default}
PUSHT_EPISODES=${PUSHT_EPISODES:-100}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-600}
read -r FT_HEADS FT_ALL <<< "${FT_STEPS:-300 4000}"
read -r FR_HEADS FR_ALL <<< "${FRANKA_FT_STEPS:-100 400}"
EVAL_SEEDS=${EVAL_SEEDS:-100000:100050}
export OUT PUSHT_EPISODES PRETRAIN_STEPS FRANKA_EPISODES=${FRANKA_EPISODES:-24} WORKERS=${WORKERS:-$(nproc)}
export RAY_USAGE_STATS_ENABLED=0
bash scripts/default_data.sh  # demos, latent shards, pretraining (each kept when made before)
source scripts/once.sh
once "$OUT/finetune" "$OUT/pretrain/.done" \
  $BIN/uva-finetune --robot pusht --pretrained "$OUT/pretrain/checkpoints" --data "$OUT/latents/pusht" \
    --config configs/finetune/pusht_default.yaml --run-dir "$OUT/finetune" \
    --set "stages=[{name: heads, steps: $FT_HEADS, lr: 1.0e-3, warmup_steps: 30, freeze: [backbone]}, {name: all, steps: $FT_ALL, lr: 5.0e-4, warmup_steps: 50}]"
once "$OUT/eval_pusht" "$OUT/finetune/.done" \
  $BIN/uva-eval --env pusht --policy "$OUT/finetune/export" --seeds "$EVAL_SEEDS" --workers "$WORKERS" \
    --output "$OUT/eval_pusht" --tracking-uri "sqlite:///$(realpath -m "$OUT")/finetune/mlflow.db" --experiment pusht-eval
.venv/bin/python -c "import json, sys; r = json.load(open(sys.argv[1])); print(f'[default] PushT score {r[\"score\"]:.4f}, success rate {r[\"success_rate\"]:.3f} over {r[\"num_episodes\"]} seeds ({sys.argv[1]})')" "$OUT/eval_pusht/results.json"
# the same checkpoint fine-tuned to the two-camera franka set (the default franka recipe's
# stages, shortened for a CPU); its held-out action error is in the stage's MLflow run
once "$OUT/finetune_franka" "$OUT/pretrain/.done" \
  $BIN/uva-finetune --robot franka --pretrained "$OUT/pretrain/checkpoints" --data "$OUT/latents/franka" \
    --eval-data "$OUT/latents/franka_val" --run-dir "$OUT/finetune_franka" --set train.eval_every=100 \
    --set "stages=[{name: heads, steps: $FR_HEADS, lr: 1.0e-3, warmup_steps: 20, freeze: [backbone]}, {name: all, steps: $FR_ALL, lr: 5.0e-4, warmup_steps: 20}]"
