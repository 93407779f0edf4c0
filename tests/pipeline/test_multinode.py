"""A two-node layout on one machine: two processes, node rank 0 and 1, local rank 0 on both, as srun
and torchrun set them. They train one data-parallel job together and checkpoint; the device comes
from the local rank (0 on both nodes), never the global one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.components.distributed import free_port
from tests.conftest import cli
from tests.pipeline.test_data import make_set
from tests.pipeline.test_train import base_sets

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def node_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    return {**env, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **extra}


def srun_like(node: int, port: int) -> tuple[list[str], dict]:
    """What srun gives task `node` of `--nodes=2 --ntasks-per-node=1` (slurm/pretrain.sh exports MASTER_*)."""
    return [cli("uva-pretrain")], node_env({
        "SLURM_JOB_ID": "4242", "SLURM_PROCID": str(node), "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
        "SLURM_NODEID": str(node), "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "localhost",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def torchrun_like(node: int, port: int) -> tuple[list[str], dict]:
    """torchrun --nnodes 2 --node-rank N --nproc-per-node 1, one per node."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}", "--nproc-per-node=1",
            "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "pipeline.train"], node_env({})


@pytest.mark.slow
def test_two_nodes_train_together_and_checkpoint(tmp_path):
    data = tmp_path / "latents"
    make_set(data / "robot", "arm", 4, 24, True)
    make_set(data / "human", "human", 2, 24, False)
    losses = {}
    for name, launch in (("srun", srun_like), ("torchrun", torchrun_like)):
        work = tmp_path / name
        sets = base_sets(work, data) + ["zero_stage=2", "total_steps=4", "checkpoint_every=2"]
        args = [a for s in sets for a in ("--set", s)] + ["--losses-out", str(work / "losses")]
        port = free_port()
        procs = []
        for node in (0, 1):
            cmd, env = launch(node, port)
            log = open(tmp_path / f"{name}-node{node}.log", "w")
            procs.append((subprocess.Popen(cmd + args, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), log))
        for proc, log in procs:
            proc.wait(timeout=600)
            log.close()
        logs = [(tmp_path / f"{name}-node{n}.log").read_text() for n in (0, 1)]
        assert all(p.returncode == 0 for p, _ in procs), "\n".join(t[-3000:] for t in logs)
        assert "2 rank(s), ZeRO-2" in logs[0]
        for node, text in enumerate(logs):
            assert f"rank {node}/2, local rank 0, device cpu" in text, text[-2000:]
        ranks = [json.loads(Path(f"{work / 'losses'}.rank{r}").read_text()) for r in (0, 1)]
        assert [r["step"] for r in ranks] == [4, 4]
        assert (work / "run" / "checkpoints" / "step_4" / "COMPLETE").is_file()
        assert sorted(p.name for p in (work / "run" / "checkpoints" / "step_4").glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]
        losses[name] = [r["losses"] for r in ranks]
    assert losses["srun"] == losses["torchrun"]  # one job, whichever launcher placed the ranks
