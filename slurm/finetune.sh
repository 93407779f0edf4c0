#!/bin/bash
# Fine-tune on a Slurm cluster: the same launcher logic as pretrain.sh (one task per GPU,
# USR1 -> checkpoint -> requeue -> resume at the interrupted stage), entry uva-finetune.
#
#   sbatch --ntasks-per-node=8 --gpus-per-node=8 slurm/finetune.sh --robot franka \
#       --pretrained runs/pretrain/checkpoints --data data/franka_latents --config configs/finetune/default.yaml
#SBATCH --job-name=uva-finetune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
UVA_ENTRY=uva-finetune exec bash slurm/pretrain.sh "$@"
