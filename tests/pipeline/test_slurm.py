"""`sbatch slurm/pretrain.sh` on a real single-node Slurm cluster that this module starts itself.

munged, slurmctld and slurmd run from a private folder (own munge key and socket, own
slurm.conf, state and spool dirs, free ports), so the test needs the Slurm and munge binaries
(Debian: slurmctld slurmd slurm-client munge; .ci/run installs them) and root, as slurmd does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.components.distributed import job_port
from tests.conftest import cli
from tests.pipeline.test_data import make_set
from tests.pipeline.test_train import base_sets

ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.is_file())
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s\n{tails}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster (2 CPUs) with its own munge; yields the env clients need."""
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        if os.environ.get("UVA_REQUIRE_SLURM"):
            pytest.fail(f"Slurm test required but missing binaries: {missing}")
        pytest.skip(f"Slurm/munge not installed ({', '.join(missing)}); .ci/run installs them")
    if os.geteuid() != 0:
        pytest.skip("slurmd needs root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    os.chmod(d / "munge", 0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    msock = d / "munge" / "munge.socket"
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"  # noqa: E731
    subprocess.run([sbin("munged"), "--force", f"--key-file={key}", f"--socket={msock}",
                    f"--pid-file={d / 'munge' / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                    f"--seed-file={d / 'munge' / 'seed'}"], check=True)

    host = socket.gethostname().split(".")[0]
    ncpu = min(2, os.cpu_count() or 1)
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=uvatest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={msock}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={ncpu} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
    launch = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # the job's tasks set their own
    env = {**{k: v for k, v in os.environ.items() if k not in launch}, "SLURM_CONF": str(conf)}
    procs = [subprocess.Popen([sbin("slurmctld"), "-D", "-i", "-f", str(conf)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True),
             subprocess.Popen([sbin("slurmd"), "-D", "-N", host, "-f", str(conf)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)]
    logs = [d / "slurmctld.log", d / "slurmd.log", d / "munged.log"]

    try:
        wait_for(lambda: node_idle(env), 90, "the Slurm node becoming idle", logs)
        yield {"env": env, "dir": d, "logs": logs}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run([sbin("munged"), f"--socket={msock}", "--stop"], capture_output=True)


def train_args(tmp_path: Path, *sets: str) -> list[str]:
    """Command-line args of a tiny 2-set training run on fresh latent shards under tmp_path."""
    data = tmp_path / "latents"
    make_set(data / "robot", "arm", 4, 24, True)
    make_set(data / "human", "human", 2, 24, False)
    every = base_sets(tmp_path, data) + ["zero_stage=2", *sets]
    return [a for s in every for a in ("--set", s)] + ["--losses-out", str(tmp_path / "losses")]


def assert_resumed(out: str, tmp_path: Path, total: int) -> None:
    """The log shows a resume from a step_N >= 3 and both ranks finished the remaining steps."""
    assert "resumed from step_" in out, out[-4000:]
    resumed_at = int(out.split("resumed from step_")[1].split()[0])
    assert 3 <= resumed_at < total
    ranks = [json.loads(Path(f"{tmp_path / 'losses'}.rank{r}").read_text()) for r in range(2)]
    assert all(r["step"] == total and len(r["losses"]) == total - resumed_at for r in ranks)


def job_state(env: dict, job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    for tok in out.split():
        if tok.startswith("JobState="):
            return tok.split("=", 1)[1]
    return "UNKNOWN"


def node_idle(env: dict) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
    return out.strip().startswith("idle")


def start_requeued_now(env: dict, job_id: str, logs: list[Path]) -> None:
    """Slurm holds a requeued job back (BeginTime, ~2 min); shorten that to a few seconds. Not to
    zero: slurmd refuses a start in the same second as the old credential's revocation."""
    wait_for(lambda: job_state(env, job_id) == "PENDING" and node_idle(env), 300,
             f"job {job_id} pending again on an idle node", logs)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+5seconds"], env=env, check=True,
                   capture_output=True)


@pytest.mark.slow
def test_sbatch_pretrain_two_tasks_to_completion(slurm, tmp_path):
    args = train_args(tmp_path, "total_steps=4", "checkpoint_every=2")
    env = {**slurm["env"], "PYTHON": sys.executable, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "job.out"
    with contextlib.ExitStack() as held:  # another process holds the ports the job ids would derive:
        for job in range(1, 65):          # the script's own free port must be the one used
            s = held.enter_context(socket.socket())
            try:
                s.bind(("", job_port(str(job))))
                s.listen()
            except OSError:
                pass
        run_sbatch_to_completion(slurm, env, args, log, tmp_path)


def run_sbatch_to_completion(slurm, env: dict, args: list[str], log: Path, tmp_path: Path) -> None:
    sub = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                          f"--output={log}", "--time=20", str(ROOT / "slurm" / "pretrain.sh"), *args],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
    wait_for(lambda: job_state(env, job_id) in final, 600, f"job {job_id} finishing", [log, *slurm["logs"]])
    out = log.read_text() if log.is_file() else ""
    assert job_state(env, job_id) == "COMPLETED", out[-4000:]
    ranks = [json.loads(Path(f"{tmp_path / 'losses'}.rank{r}").read_text()) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4 and len(ranks[0]["losses"]) == 4
    assert "2 rank(s), ZeRO-2" in out, out[-3000:]  # one data-parallel job, not two single-rank runs
    ckpt = tmp_path / "run" / "checkpoints" / "step_4"
    assert (ckpt / "COMPLETE").is_file()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.run_id == ranks[0]["run_id"]  # one run per job, from rank 0


@pytest.mark.slow
def test_sbatch_preempt_signal_checkpoints_requeues_and_resumes(slurm, tmp_path):
    """Slurm's warning signal: ranks checkpoint and exit 124, the script requeues, the job resumes."""
    total = 30
    args = train_args(tmp_path, f"total_steps={total}", "checkpoint_every=1000")
    env = {**slurm["env"], "PYTHON": sys.executable, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "job.out"
    sub = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                          f"--output={log}", "--open-mode=append", "--time=20", str(ROOT / "slurm" / "pretrain.sh"), *args],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    text = lambda: log.read_text() if log.is_file() else ""  # noqa: E731
    wait_for(lambda: f"step 3/{total}" in text(), 300, "training reaching step 3", [log, *slurm["logs"]])
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)  # what --signal=USR1@120 sends
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
    wait_for(lambda: "requeueing" in text() or job_state(env, job_id) in final, 300, "the job requeueing itself",
             [log, *slurm["logs"]])
    start_requeued_now(env, job_id, [log, *slurm["logs"]])
    wait_for(lambda: job_state(env, job_id) in final, 600, f"job {job_id} finishing", [log, *slurm["logs"]])
    out = text()
    assert job_state(env, job_id) == "COMPLETED", out[-4000:]
    assert "preempted: checkpointed, requeueing" in out, out[-4000:]
    assert_resumed(out, tmp_path, total)


@pytest.mark.slow
def test_submitit_launcher_preempt_requeue_resume(slurm, tmp_path):
    """uva-pretrain --submitit on the same cluster: 2 tasks, submitit's USR2 -> checkpoint -> requeue -> resume."""
    total = 30
    args = train_args(tmp_path, f"total_steps={total}", "checkpoint_every=1000")
    env = {**slurm["env"], "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "submitit"
    sub = subprocess.run([cli("uva-pretrain"), "--submitit", "--tasks-per-node", "2",
                          "--cpus-per-task", "1", "--timeout-min", "30", "--log-dir", str(logs), *args],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job_id = sub.stdout.split("submitted")[-1].split()[0]
    text = lambda: "".join(p.read_text() for p in sorted(logs.glob(f"{job_id}_*_log.out")))  # noqa: E731
    errs = lambda: sorted(logs.glob(f"{job_id}_*_log.err"))  # noqa: E731
    wait_for(lambda: f"step 3/{total}" in text(), 300, "training reaching step 3", [*errs(), *slurm["logs"]])
    subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)  # what submitit's --signal sends
    start_requeued_now(env, job_id, [*errs(), *slurm["logs"]])
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
    wait_for(lambda: job_state(env, job_id) in final, 600, f"job {job_id} finishing", [*errs(), *slurm["logs"]])
    out = text()
    assert job_state(env, job_id) == "COMPLETED", out[-3000:] + "".join(p.read_text()[-3000:] for p in errs())
    assert "2 rank(s), ZeRO-2" in out, out[-3000:]
    assert_resumed(out, tmp_path, total)
