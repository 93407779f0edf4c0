"""Where this process sits in the job, and agreeing on a preemption stop across ranks.

Rank, world size, local rank and the rendezvous address come from, in order:
- torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT already set),
- Slurm: srun, sbatch scripts and submitit alike (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
  the first host of SLURM_JOB_NODELIST, read through submitit's Slurm job environment; the port
  from MASTER_PORT (slurm/pretrain.sh exports a free one), else derived from the job id, below
  Linux's ephemeral range so that no outgoing connection holds it),
- a single process: rank 0 of 1 on 127.0.0.1 and a free port unless MASTER_PORT is given, so
  two jobs on one machine do not collide.
The values are exported for torch.distributed's env:// rendezvous. The device comes from the
local rank, never the global one: rank 9 of a 2 x 8 job is cuda:1 on its node.

DeepSpeed JIT-builds some ops (on CPU the shared-memory collective) into torch's extensions
folder, which torch keys by Python and torch version only: two environments on one machine (two
DeepSpeed versions, say) would load each other's builds and fail in ``init_distributed``.
``isolate_op_builds`` gives each environment and DeepSpeed version its own folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
PREEMPTED_EXIT = 124  # exit code of a job that checkpointed on a preemption signal


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


RENDEZVOUS_PORTS = (20000, 32767)  # below Linux's ephemeral range (32768-60999), which the OS hands to clients


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody holds right now, drawn from RENDEZVOUS_PORTS so that no outgoing
    connection takes it before the rendezvous listens on it (the OS's pick if all tries fail)."""
    import random

    ports = range(RENDEZVOUS_PORTS[0], RENDEZVOUS_PORTS[1] + 1)
    for port in random.sample(ports, min(64, len(ports))):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def job_port(job_id: str) -> int:
    """The port every task of a Slurm job derives from its id when no MASTER_PORT is given (as
    submitit's helper does); slurm/pretrain.sh gives one it found free instead."""
    import random

    return random.Random(job_id).randint(*RENDEZVOUS_PORTS)


def _from_slurm() -> dict[str, str]:
    """Rank and rendezvous of a Slurm task (srun, an sbatch script or submitit alike)."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    job = SlurmJobEnvironment()  # reads SLURM_*; parses SLURM_JOB_NODELIST without scontrol
    return {"RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
            "MASTER_ADDR": job.hostnames[0], "MASTER_PORT": str(job_port(job.job_id))}


def dist_env() -> DistEnv:
    """Read this process's place in the job and export it for torch.distributed (env://)."""
    environ = os.environ
    if "RANK" in environ and "WORLD_SIZE" in environ:
        found = {}
    elif "SLURM_PROCID" in environ and "SLURM_JOB_ID" in environ:
        found = _from_slurm()
    else:
        found = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
        if "MASTER_PORT" not in environ:
            found["MASTER_PORT"] = str(free_port())
    for key, value in found.items():
        if key in ("MASTER_ADDR", "MASTER_PORT"):
            environ.setdefault(key, value)  # a launcher's explicit choice wins
        else:
            environ[key] = value
    environ.setdefault("LOCAL_RANK", "0")
    environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in environ:
        raise ValueError("MASTER_PORT is not set: the launcher must give the rendezvous port")
    return DistEnv(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"]),
                   environ["MASTER_ADDR"], int(environ["MASTER_PORT"]))


def device_for(local_rank: int) -> torch.device:
    """This process's device: the GPU of its local rank, or the CPU."""
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


OP_BUILDS_KEY = "UVA_OP_BUILDS_FOR"  # marks TORCH_EXTENSIONS_DIR as already chosen for this environment


def op_builds_key(prefix: str | None = None, deepspeed_version: str | None = None) -> str:
    """Names one environment's op builds: Python, torch and DeepSpeed versions and the
    environment's prefix (two venvs with the same versions still get two folders)."""
    if deepspeed_version is None:
        try:
            deepspeed_version = metadata.version("deepspeed")
        except metadata.PackageNotFoundError:
            deepspeed_version = "none"
    prefix = prefix or sys.prefix
    digest = hashlib.sha1(prefix.encode()).hexdigest()[:10]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"{py}-torch{torch.__version__.split('+')[0]}-ds{deepspeed_version}-{digest}"


def isolate_op_builds(environ=os.environ, prefix: str | None = None, deepspeed_version: str | None = None) -> str:
    """Point TORCH_EXTENSIONS_DIR at a folder of this environment's own (under the one the user
    set, or torch's default ~/.cache/torch_extensions) unless a parent process of the same
    environment already did; child processes (torchrun, srun ranks) inherit it. Returns it."""
    key = op_builds_key(prefix, deepspeed_version)
    if environ.get(OP_BUILDS_KEY) == key and environ.get("TORCH_EXTENSIONS_DIR"):
        return environ["TORCH_EXTENSIONS_DIR"]
    base = environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "torch_extensions")
    if environ.get(OP_BUILDS_KEY):  # a parent of another environment chose it: build beside, not inside
        base = str(Path(base).parent)
    environ["TORCH_EXTENSIONS_DIR"] = str(Path(base) / key)
    environ[OP_BUILDS_KEY] = key
    return environ["TORCH_EXTENSIONS_DIR"]


def init_distributed() -> tuple[DistEnv, torch.device]:
    """Join the process group (nccl on GPU, gloo on CPU) and pin this process's device."""
    isolate_op_builds()
    import deepspeed

    env = dist_env()
    device = device_for(env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return env, device


def leave_process_group() -> None:
    """Leave together: srun --kill-on-bad-exit kills the others as soon as one rank exits 124."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class Preemption:
    """Slurm's warning signal (USR1 in slurm/pretrain.sh, USR2 under submitit) and SIGTERM, while
    the block runs: a signal only raises a flag; ``agreed()`` (collective) tells every rank to stop
    at the same step, so the checkpoint's collectives cannot hang. The previous handlers
    (submitit's requeue handler among them) come back when the block ends.

        with Preemption() as preempt:
            for step in ...:
                if preempt.agreed():
                    save(); break
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPT_SIGNALS):
        self.signals = signals
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "Preemption":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def agreed(self) -> bool:
        """True on every rank when any rank was signalled (an all-reduce when distributed)."""
        dist = torch.distributed.is_initialized()
        on_gpu = dist and torch.distributed.get_backend() == "nccl"  # nccl reduces GPU tensors only
        flag = torch.tensor([1.0 if self.requested else 0.0], device="cuda" if on_gpu else "cpu")
        if dist:
            torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)
