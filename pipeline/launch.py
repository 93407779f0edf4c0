"""Launchers around the training entry points (pipeline.train, pipeline.finetune).

    uva-pretrain --config configs/pretrain/default.yaml [--nproc 2] [--set k=v]
    uva-pretrain --submitit --nodes 2 --gpus-per-node 8 --partition gpu --config ...
    uva-finetune --robot franka --pretrained CKPT --data SHARDS [--nproc 2 | --submitit ...]

Local: one process, or ``--nproc N`` processes through torchrun. Submitit: a Checkpointable
job whose ``checkpoint`` hook requeues it; on timeout/preemption the training code has already
saved (SIGUSR1/SIGTERM handler) and resumes from the latest complete checkpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


class TrainJob:
    """Submitit callable: runs pipeline.train in each task; requeues itself after a preemption.

    Submitit's own USR2 handler would requeue at once, mid-step. Instead the training loop takes
    the signal (it handles USR1/USR2/TERM while it runs), every rank checkpoints, and only then
    does rank 0 hand the signal back to submitit, whose handler calls ``checkpoint`` and requeues.
    """

    def __init__(self, argv: list[str], module: str = "pipeline.train"):
        self.argv = argv
        self.module = module

    def __call__(self) -> dict:
        import importlib
        import signal

        import submitit

        run = importlib.import_module(self.module).run

        env = submitit.JobEnvironment()  # rank and rendezvous: pipeline.components.distributed
        result = run(self.argv)
        if result["preempted"] and env.global_rank == 0:
            sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
            os.kill(os.getpid(), sig)  # submitit's handler: checkpoint() -> scontrol requeue -> exit
        return {k: result[k] for k in ("step", "preempted", "run_id")}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.argv, self.module))


def main(argv: list[str] | None = None, module: str = "pipeline.train") -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    p.add_argument("--launcher-help", action="help", help="show the launcher's options")
    p.add_argument("--nproc", type=int, default=1, help="local processes (torchrun)")
    p.add_argument("--submitit", action="store_true", help="submit to Slurm through submitit")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--tasks-per-node", type=int, default=1)
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--mem-gb", type=int, default=None, help="memory per node (default: the cluster's)")
    p.add_argument("--partition", default=None)
    p.add_argument("--timeout-min", type=int, default=60 * 24)
    p.add_argument("--log-dir", default="logs/submitit")
    args, rest = p.parse_known_args(argv)
    from pipeline.components.distributed import isolate_op_builds

    isolate_op_builds()  # every rank (torchrun, submitit) builds and loads DeepSpeed's ops in this environment's folder
    if args.submitit:
        import submitit

        ex = submitit.AutoExecutor(folder=args.log_dir)
        params = dict(nodes=args.nodes, tasks_per_node=max(args.tasks_per_node, args.gpus_per_node or 1),
                      cpus_per_task=args.cpus_per_task, timeout_min=args.timeout_min, slurm_signal_delay_s=120)
        if args.gpus_per_node:
            params["gpus_per_node"] = args.gpus_per_node
        if args.mem_gb:
            params["mem_gb"] = args.mem_gb
        if args.partition:
            params["slurm_partition"] = args.partition
        ex.update_parameters(**params)
        job = ex.submit(TrainJob(rest, module))
        print(f"submitted {job.job_id}")
        return
    if args.nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}", "-m", module, *rest]
        sys.exit(subprocess.call(cmd, env={**os.environ}))
    import importlib

    importlib.import_module(module).main(rest)


def finetune_main(argv: list[str] | None = None) -> None:
    """uva-finetune: the launchers around pipeline.finetune."""
    main(argv, module="pipeline.finetune")


if __name__ == "__main__":
    main()
