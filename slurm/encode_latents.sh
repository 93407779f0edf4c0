#!/bin/bash
# Encode video into latent shards on a Slurm allocation: a Ray head on the first node, a Ray
# worker on every other node, then uva-encode against that cluster.
#
#   sbatch --nodes=4 slurm/encode_latents.sh --manifest /data/manifest.jsonl --output /data/latents \
#          --config configs/preprocess/mar_kl16.yaml
#
#SBATCH --job-name=uva-encode
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
BIN=$(dirname "${PYTHON:-.venv/bin/python}")  # the environment holding the console scripts
RAY=${RAY:-$BIN/ray}
export RAY_USAGE_STATS_ENABLED=0
# One auth mode for head, workers and driver: token auth whenever a token is at hand (Ray's
# coming default; the token file on a shared home reaches every node), else none.
if [[ -z "${RAY_AUTH_MODE:-}" ]]; then
  if [[ -n "${RAY_AUTH_TOKEN:-}" || -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]]; then
    export RAY_AUTH_MODE=token
  else
    export RAY_AUTH_MODE=disabled
  fi
fi
mkdir -p logs

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
port=${RAY_PORT:-6379}
cpus=${SLURM_CPUS_PER_TASK:-1}
gpus=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)

srun --nodes=1 --ntasks=1 -w "$head" \
    "$RAY" start --head --node-ip-address="$head_ip" --port="$port" --num-cpus="$cpus" --num-gpus="$gpus" --block &
sleep 10
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
      "$RAY" start --address="$head_ip:$port" --num-cpus="$cpus" --num-gpus="$gpus" --block &
done
sleep 5

"$BIN/uva-encode" --ray-address "$head_ip:$port" --no-progress "$@"
