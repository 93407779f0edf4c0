"""Rank, world and rendezvous from torchrun, Slurm or one process; free ports; device from the
local rank; preemption handlers installed and restored, the stop agreed."""

import os
import signal
import socket

import pytest
import torch

from pipeline.components import distributed
from pipeline.components.distributed import Preemption, device_for, dist_env, free_port

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_JOB_ID",
               "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES")


@pytest.fixture
def clean_env():
    """No launcher variables during the test, and the environment exactly as before after it:
    dist_env exports RANK, MASTER_PORT & co., which would pin every later launch from this process
    to one port and one rank. (Not monkeypatch: it would restore the values dist_env set.)"""
    saved = dict(os.environ)
    for key in LAUNCH_VARS:
        os.environ.pop(key, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def test_single_process_picks_a_free_port_unless_given(clean_env, monkeypatch):
    env = dist_env()
    assert (env.rank, env.world_size, env.local_rank, env.master_addr) == (0, 1, 0, "127.0.0.1")
    assert os.environ["MASTER_PORT"] == str(env.master_port)
    with socket.socket() as s:  # nobody else holds it
        s.bind(("127.0.0.1", env.master_port))
    del clean_env["MASTER_PORT"]
    assert 20000 <= env.master_port < 32768  # below the ephemeral range: no client connection holds it
    with socket.socket() as busy:  # a second job on the machine holds a port: the next pick differs
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        held = busy.getsockname()[1]
        assert free_port() != held
        monkeypatch.setattr(distributed, "RENDEZVOUS_PORTS", (held, held + 1))  # of two, the held one is never picked
        assert held not in {free_port() for _ in range(8)}
    clean_env["MASTER_PORT"] = "31234"
    assert dist_env().master_port == 31234


def test_torchrun_variables_are_taken_as_they_are(clean_env):
    for k, v in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29999"}.items():
        clean_env[k] = v
    assert dist_env() == distributed.DistEnv(3, 4, 1, "10.0.0.7", 29999)


def test_slurm_task_of_a_two_node_job(clean_env):
    """What srun sets for task 9 of 2 nodes x 8 tasks: global rank 9, local rank 1, node 1."""
    for k, v in {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                 "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu-node[07-08]"}.items():
        clean_env[k] = v
    env = dist_env()
    assert (env.rank, env.world_size, env.local_rank, env.master_addr) == (9, 16, 1, "gpu-node07")
    assert os.environ["RANK"] == "9" and os.environ["LOCAL_RANK"] == "1"
    assert 20000 <= env.master_port < 32768  # no client connection is handed a port there
    clean_env["MASTER_PORT"] = "29876"  # slurm/pretrain.sh's choice wins over submitit's
    clean_env["MASTER_ADDR"] = "10.1.1.1"
    assert (dist_env().master_addr, dist_env().master_port) == ("10.1.1.1", 29876)


def test_device_comes_from_the_local_rank(monkeypatch):
    assert device_for(3) == torch.device("cpu") or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_for(1) == torch.device("cuda:1")  # rank 9 of a 2 x 8 job: its node's second GPU


def test_preemption_flags_and_restores_handlers():
    previous = signal.getsignal(signal.SIGUSR1)
    with Preemption() as preempt:
        assert not preempt.agreed()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preempt.requested and preempt.agreed()  # one process: agreed without a process group
    assert signal.getsignal(signal.SIGUSR1) == previous
