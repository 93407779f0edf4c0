#!/bin/bash
# Pretrain on a Slurm cluster: one task per GPU, every task runs the same entry point.
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 slurm/pretrain.sh --config configs/pretrain/default.yaml
#
# Every task runs the console script uva-pretrain (uva-finetune for slurm/finetune.sh); rank, world
# size, local rank and the rendezvous host (the first node) come from Slurm's variables
# (pipeline/components/distributed.py). The rendezvous port is MASTER_PORT if the submission
# sets it, else one this script finds free on the first node (where it runs) at each start,
# requeued starts included: a fixed port derived from the job id can be held by another process.
#
# Slurm sends SIGUSR1 120 s before the time limit (--signal); every rank then checkpoints and
# exits 124, and the job requeues itself and resumes from the latest complete checkpoint.
#SBATCH --job-name=uva-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
set -uo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
BIN=$(dirname "${PYTHON:-.venv/bin/python}")  # the environment holding the console scripts
ENTRY=${UVA_ENTRY:-uva-pretrain}
mkdir -p logs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
if [ -z "${MASTER_PORT:-}" ]; then
  MASTER_PORT=$("${PYTHON:-.venv/bin/python}" -c \
    'from pipeline.components.distributed import free_port; print(free_port(""))') || exit 1
  export MASTER_PORT
fi

# Rank 0 writes this file once the preemption checkpoint is complete: the requeue decision
# does not depend on which rank srun saw exit first.
export UVA_PREEMPT_MARKER=${UVA_PREEMPT_MARKER:-$PWD/logs/.preempted-$SLURM_JOB_ID}
rm -f "$UVA_PREEMPT_MARKER"

# srun forwards the signal to every task; the training code handles it.
srun --kill-on-bad-exit=1 "$BIN/$ENTRY" "$@"
code=$?
if [ "$code" -eq 124 ] || [ -f "$UVA_PREEMPT_MARKER" ]; then
  rm -f "$UVA_PREEMPT_MARKER"
  echo "[$ENTRY] preempted: checkpointed, requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$code"
