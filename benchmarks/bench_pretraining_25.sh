#!/usr/bin/env bash
# Pretrained vs from scratch at 25 PushT demos, with the held-out errors every 250 fine-tune steps
# (the replicate in benchmarks/RESULTS.md, "Does pretraining help?"). Builds what is missing of the
# embedded default's demos, shards and 600-step pretraining under OUT (default runs/default;
# scripts/default_data.sh), then fine-tunes both arms and prints bench_ablation's tables; the
# curves are the [eval] lines of $ABL/{pre25,scratch25}/finetune.log. About an hour on 2 CPU cores from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN=.venv/bin; OUT=${OUT:-runs/default}; W=${WORKERS:-$(nproc)}; ABL=${ABL:-runs/diag/ablate}
export OUT WORKERS=$W RAY_USAGE_STATS_ENABLED=0
bash scripts/default_data.sh  # the embedded default's demos, shards and 600-step pretraining
# the 25-demo subset and 12 held-out demos of other seeds
[ -f $OUT/pusht_val_demos/manifest.jsonl ] || $BIN/uva-make-pusht-demos --output "$OUT/pusht_val_demos" --num-episodes 12 --seed 5000 --workers $W
head -25 $OUT/pusht_demos/manifest.jsonl > $OUT/pusht_demos/manifest_25.jsonl
ENC="$BIN/uva-encode --config configs/preprocess/default.yaml"
[ -f $OUT/latents/pusht_25/index.json ] || $ENC --manifest $OUT/pusht_demos/manifest_25.jsonl --output $OUT/latents/pusht_25
[ -f $OUT/latents/pusht_val/index.json ] || $ENC --manifest $OUT/pusht_val_demos/manifest.jsonl --output $OUT/latents/pusht_val
EV="--data $OUT/latents/pusht_25 --eval-data $OUT/latents/pusht_val --set train.eval_every=250"
.venv/bin/python benchmarks/bench_ablation.py --out $ABL --val $OUT/latents/pusht_val --workers $W \
  --variant pre25 "$EV" "" --variant scratch25 "$EV --from-scratch" "" --pair pre25 scratch25
for arm in pre25 scratch25; do  # the held-out curves (heads steps, then all steps, each from 0)
  echo "# $arm"; grep -h "^\[eval\]" "$ABL/$arm/finetune.log" \
    | sed -E 's/^\[eval\] (step [0-9]+):.*(val\/action_mse [0-9.]+).*(val\/latent_mse [0-9.]+).*/\1 \2 \3/'
done
