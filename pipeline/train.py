"""Training entry point: DeepSpeed ZeRO over latent shards, mixed masking, MLflow, exact resume.

One entry point for every launcher (local, torchrun, srun, submitit):

    python -m pipeline.train --config configs/pretrain/default.yaml [--set optim.lr=3e-4]
    torchrun --nproc-per-node 2 -m pipeline.train --config ...

Rank/world come from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or Slurm (SLURM_PROCID, ...).
Everything is counted in optimizer steps. Checkpoints (model, optimizer/ZeRO state, LR
schedule, step, EMA, RNG, MLflow run id, config) go to ``run_dir/checkpoints/step_N`` and are
only used on resume once marked complete; SIGUSR1/SIGTERM (Slurm's warning, preemption)
make every rank checkpoint at the next step boundary and exit with code 124.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from pipeline.config import load_config, to_dict
from pipeline.data import make_loader, merged_stats
from pipeline.train_config import TrainConfig
from uva import UVA, count_parameters, model_config
from uva.modes import MODE_NAMES, mode_weights_tensor

PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
PREEMPTED_EXIT = 124


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun or Slurm; sets MASTER_ADDR/PORT for Slurm."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        if "MASTER_ADDR" not in os.environ:
            nodes = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                                   capture_output=True, text=True, check=True).stdout.split()
            os.environ["MASTER_ADDR"] = nodes[0]
        os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", 0)) % 1000))
        for key, value in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))):
            os.environ[key] = str(value)
        return rank, world, int(os.environ["LOCAL_RANK"])
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    return 0, 1, 0


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine from 1 to min_lr_ratio at total_steps."""
    warm = cfg.optim.warmup_steps
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, cfg.total_steps - warm))
    return cfg.optim.min_lr_ratio + (1 - cfg.optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def deepspeed_config(cfg: TrainConfig, world: int, bf16: bool) -> dict:
    """The DeepSpeed JSON, generated from our config so one place holds the truth."""
    ds = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum_steps * world,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.zero_stage == 3:
        ds["zero_optimization"].update({"stage3_gather_16bit_weights_on_model_save": False})
    return ds


class EMA:
    """Exponential moving average of this rank's parameter storage (full or ZeRO-3 shard)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [self._local(p).detach().float().clone() for p in self.params]

    @staticmethod
    def _local(p: torch.nn.Parameter) -> torch.Tensor:
        return p.ds_tensor if hasattr(p, "ds_tensor") else p.data

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (1-based). The decay warms up as
        min(decay, (1 + step) / (10 + step)), so short runs are not dominated by the init."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(self._local(p).float(), 1 - decay)


def consolidated_weights(engine, ema: "EMA | None", rank: int, zero3: bool) -> tuple[dict, dict]:
    """Full fp32 model and EMA state dicts on rank 0 (empty elsewhere), at any ZeRO stage.

    Collective under ZeRO-3 (parameters are gathered), so every rank must call it.
    """
    module = engine.module
    names = {id(p): n for n, p in module.named_parameters()}
    keys = set(module.state_dict().keys())
    buffers = {n: b.detach().float().cpu().clone() if b.is_floating_point() else b.detach().cpu().clone()
               for n, b in module.named_buffers() if n in keys}
    params = [p for p in module.parameters()]
    model_sd: dict = {}
    ema_sd: dict = {}
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank == 0:
                model_sd = {names[id(p)]: p.detach().float().cpu().clone() for p in params}
        if ema is not None:
            saved = [EMA._local(p).detach().clone() for p in ema.params]
            with torch.no_grad():
                for p, sh in zip(ema.params, ema.shadow):
                    EMA._local(p).copy_(sh.to(EMA._local(p).dtype))
            with deepspeed.zero.GatheredParameters(ema.params, modifier_rank=None):
                if rank == 0:
                    ema_sd = {names[id(p)]: p.detach().float().cpu().clone() for p in ema.params}
            with torch.no_grad():
                for p, old in zip(ema.params, saved):
                    EMA._local(p).copy_(old)
    elif rank == 0:
        model_sd = {names[id(p)]: p.detach().float().cpu().clone() for p in params}
        if ema is not None:
            ema_sd = {names[id(p)]: sh.detach().float().cpu().clone() for p, sh in zip(ema.params, ema.shadow)}
    if rank != 0:
        return {}, {}
    model_sd.update(buffers)
    if ema is not None:  # parameters without gradients and buffers are not averaged: take them as they are
        ema_sd = {**model_sd, **ema_sd}
    return model_sd, ema_sd


def load_pretrained(path: str | Path, which: str = "ema") -> tuple[dict, Path]:
    """State dict from a checkpoint of ours: a ``step_N`` folder, a checkpoints folder (its latest
    complete step) or a .safetensors file. ``which``: ``ema`` (default) or ``model`` weights."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file():
        return load_file(str(path)), path
    if not path.is_dir():
        raise FileNotFoundError(f"init_from: {path} does not exist")
    if not (path / "COMPLETE").is_file():
        steps = Checkpoints(path, 1).complete()
        if not steps:
            raise FileNotFoundError(f"init_from: {path} is neither a complete step_N checkpoint "
                                    f"nor a folder holding one")
        path = path / f"step_{steps[-1]}"
    f = path / f"{which}.safetensors"
    if not f.is_file() and which == "ema":
        f = path / "model.safetensors"  # a run trained without EMA
    if not f.is_file():
        raise FileNotFoundError(f"init_from: {path} has no {which}.safetensors (written by checkpoints "
                                f"of this version and later)")
    return load_file(str(f)), f


# Parameters that follow the robot (action dimension/horizon, proprioception): re-created when
# adapting to a robot.
ADAPT_PREFIXES = ("embed.action_proj.", "action_head.", "embed.proprio.")


def load_into(model: torch.nn.Module, state: dict, source, size: str, adapt: bool = False) -> list[str]:
    """Load ``state`` into ``model``. With ``adapt``, robot layers (action embedding and head,
    proprioception) whose shapes differ or that the checkpoint lacks keep their fresh init
    (returned), and robot layers the model lacks are dropped; any other difference means a
    checkpoint of another size or layout."""
    own = model.state_dict()
    robot_layer = lambda k: adapt and k.startswith(ADAPT_PREFIXES)  # noqa: E731
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = sorted(k for k in set(own) - set(state) if not robot_layer(k))
    unexpected = sorted(k for k in set(state) - set(own) if not robot_layer(k))
    fresh = {k for k in mismatched if robot_layer(k)} | {k for k in set(own) - set(state) if robot_layer(k)}
    bad = [k for k in mismatched if k not in fresh]
    if bad or missing or unexpected:
        detail = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:4])
        raise ValueError(f"checkpoint {source} is from a different model size or layout than {size} here: "
                         f"shape mismatch [{detail}], missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.load_state_dict({**own, **{k: v for k, v in state.items() if k in own and k not in fresh}})
    return sorted({p.rstrip(".") for p in ADAPT_PREFIXES for k in fresh if k.startswith(p)})


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> int:
    """requires_grad=False under each name prefix; an unknown prefix is an error. Returns the count."""
    params = dict(model.named_parameters())
    hits = {x: [n for n in params if n == x or n.startswith(x.rstrip(".") + ".")] for x in prefixes}
    for prefix, names in hits.items():
        if not names:
            tops = sorted({n.split(".")[0] for n in params})
            raise ValueError(f"freeze: '{prefix}' names no parameters; top-level modules: {', '.join(tops)}")
    frozen = {n for names in hits.values() for n in names}
    for n in frozen:
        params[n].requires_grad_(False)
    return sum(params[n].numel() for n in frozen)


# Dense bf16 peak FLOP/s per device, for MFU; UVA_PEAK_TFLOPS overrides (other GPUs, fp32, CPU).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops(cuda: bool, bf16: bool) -> float | None:
    if os.environ.get("UVA_PEAK_TFLOPS"):
        return float(os.environ["UVA_PEAK_TFLOPS"]) * 1e12
    if not (cuda and bf16):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class Checkpoints:
    """Complete-only checkpoint folders ``step_N``: a COMPLETE marker is written last."""

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root, keep

    def complete(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in self.root.glob("step_*") if (p / "COMPLETE").is_file())

    def latest(self) -> str | None:
        steps = self.complete()
        return f"step_{steps[-1]}" if steps else None

    def finish(self, step: int) -> None:
        (self.root / f"step_{step}" / "COMPLETE").write_text(str(step))
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(self.root / f"step_{old}", ignore_errors=True)
        for torn in self.root.glob("step_*"):  # partial folders of a job killed mid-save
            if not (torn / "COMPLETE").is_file() and torn.name != f"step_{step}":
                shutil.rmtree(torn, ignore_errors=True)


class Tracker:
    """MLflow on rank 0 only: one run per job, continued after a requeue."""

    def __init__(self, cfg: TrainConfig, rank: int, run_id: str | None):
        self.active = rank == 0
        self.run_id = run_id
        if not self.active:
            return
        import mlflow

        self.mlflow = mlflow
        local = Path(cfg.run_dir).resolve()
        mlflow.set_tracking_uri(cfg.tracking_uri or f"sqlite:///{local / 'mlflow.db'}")
        if mlflow.get_experiment_by_name(cfg.experiment) is None:
            # a local store keeps its artifacts in the run folder, not in the working directory
            remote = cfg.tracking_uri and not cfg.tracking_uri.startswith(("sqlite:", "file:"))
            where = None if remote else (local / "mlartifacts").as_uri()
            mlflow.create_experiment(cfg.experiment, artifact_location=where)
        mlflow.set_experiment(cfg.experiment)
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run()
        self.run_id = run.info.run_id
        if not run_id:
            flat = {}

            def walk(prefix, node):
                if isinstance(node, dict):
                    for k, v in node.items():
                        walk(f"{prefix}.{k}" if prefix else k, v)
                else:
                    flat[prefix] = node

            walk("", to_dict(cfg))
            mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            self.mlflow.log_metrics(metrics, step=step)

    def artifact(self, path: str) -> None:
        if self.active:
            self.mlflow.log_artifact(path)

    def close(self) -> None:
        if self.active:
            self.mlflow.end_run()


def to_device(batch: dict, device: str, bf16: bool) -> dict:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        out[k] = v.to(torch.bfloat16) if bf16 and v.is_floating_point() else v
    return out


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training; returns the per-step losses of this process and the final step."""
    import deepspeed

    rank, world, local_rank = dist_env()
    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    run_dir = Path(cfg.run_dir)
    ckpts = Checkpoints(run_dir / "checkpoints", cfg.keep_last)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    mcfg = model_config(cfg.model.size, **{**cfg.model.overrides,
                                           "num_history": cfg.data.window.num_history,
                                           "num_future": cfg.data.window.num_future,
                                           "action_horizon": cfg.data.window.action_horizon,
                                           "action_dim": cfg.data.action_dim,
                                           "proprio_dim": cfg.data.proprio_dim})
    model = UVA(mcfg)
    if cfg.init_from:
        state, source = load_pretrained(cfg.init_from, cfg.init_weights)
        recreated = load_into(model, state, source, cfg.model.size, adapt=cfg.init_adapt)
        if rank == 0:
            print(f"[train] initialized from {source}"
                  + (f"; new for this robot: {', '.join(recreated)}" if recreated else ""),
                  flush=True)
    frozen = freeze_parameters(model, cfg.freeze)
    if rank == 0 and frozen:
        print(f"[train] frozen: {frozen} parameters under {', '.join(cfg.freeze)}", flush=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                           config=deepspeed_config(cfg, world, bf16))
    ema = EMA(engine.module, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000 + rank)

    step, run_id = 0, None
    tag = ckpts.latest()
    if tag:
        _, client = engine.load_checkpoint(str(ckpts.root), tag)
        if client["world_size"] != world:
            raise ValueError(f"checkpoint {tag} was written by {client['world_size']} ranks; "
                             f"resume with the same number of ranks (got {world})")
        step, run_id = client["step"], client.get("mlflow_run_id")
        local = torch.load(ckpts.root / tag / f"rank{rank}.pt", map_location="cpu", weights_only=True)
        gen.set_state(local["generator"])
        torch.set_rng_state(local["torch_rng"])
        if ema is not None:
            for s, v in zip(ema.shadow, local["ema"]):
                s.copy_(v)
        if rank == 0:
            print(f"[train] resumed from {tag} at step {step}", flush=True)
    tracker = Tracker(cfg, rank, run_id)
    if rank == 0 and not run_id:
        cfg_path = run_dir / "config.json"
        cfg_path.write_text(json.dumps(to_dict(cfg), indent=1))
        tracker.artifact(str(cfg_path))
        print(f"[train] {cfg.model.size}: {count_parameters(model)['total'] / 1e6:.2f}M params, "
              f"{world} rank(s), ZeRO-{cfg.zero_stage}, {'bf16' if bf16 else 'fp32'}", flush=True)

    # Slurm's warning signal (USR1 in slurm/pretrain.sh, USR2 under submitit) and SIGTERM: every
    # rank finishes its step, all agree, checkpoint, return preempted. The previous handlers
    # (submitit's requeue handler among them) come back when train() returns.
    stop = {"flag": False}
    previous = {sig: signal.signal(sig, lambda *_: stop.__setitem__("flag", True)) for sig in PREEMPT_SIGNALS}

    def save(at: int) -> None:
        tag = f"step_{at}"
        client = {"step": at, "world_size": world, "mlflow_run_id": tracker.run_id, "config": to_dict(cfg)}
        engine.save_checkpoint(str(ckpts.root), tag, client_state=client)
        local = {"generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                 "ema": [s.cpu() for s in ema.shadow] if ema is not None else []}
        torch.save(local, ckpts.root / tag / f"rank{rank}.pt")
        model_sd, ema_sd = consolidated_weights(engine, ema, rank, cfg.zero_stage == 3)
        if rank == 0:  # consolidated weights: init_from, fine-tuning and export read these, no DeepSpeed
            from safetensors.torch import save_file

            save_file(model_sd, str(ckpts.root / tag / "model.safetensors"))
            (ckpts.root / tag / "model_config.json").write_text(json.dumps(asdict(mcfg), indent=1))
            if ema_sd:
                save_file(ema_sd, str(ckpts.root / tag / "ema.safetensors"))
        torch.distributed.barrier()
        if rank == 0:
            ckpts.finish(at)
            print(f"[train] checkpoint {tag}", flush=True)
        torch.distributed.barrier()

    eval_state: dict = {}

    def run_eval(at: int) -> None:
        from pipeline.evaluate import evaluate, write_prediction_video

        if "loader" not in eval_state:
            data = replace(cfg.data, sources=cfg.eval_sources or cfg.data.sources, seed=cfg.data.seed + 1,
                           num_workers=0)
            eval_state["loader"] = iter(make_loader(data, cfg.eval_batch_size, rank, world,
                                                    stats=merged_stats(cfg.data.sources)))
            if rank == 0 and cfg.eval_vae:
                from pipeline.vae_store import load_vae

                eval_state["vae"] = load_vae(cfg.eval_vae)
        batch = to_device(next(eval_state["loader"]), device, bf16)
        res = evaluate(engine.module, batch, cfg.eval_sampling_steps, cfg.eval_iters,
                       torch.Generator(device="cpu").manual_seed(cfg.seed + at))
        metrics = res["metrics"]
        if "vae" in eval_state:
            path = run_dir / "eval" / f"prediction_step{at:07d}.mp4"
            path.parent.mkdir(exist_ok=True)
            metrics["val/video_psnr"] = write_prediction_video(eval_state["vae"], batch, res["future"], path)
            tracker.artifact(str(path))
        tracker.log(metrics, at)
        if rank == 0:
            print(f"[eval] step {at}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())), flush=True)

    loader = iter(make_loader(cfg.data, cfg.micro_batch_size, rank, world))
    for _ in range(step * cfg.grad_accum_steps):  # data position: replay the deterministic stream
        next(loader)
    weights = mode_weights_tensor(cfg.mode_weights)
    losses: list[float] = []
    history: list[dict] = []
    window = {"t": time.time(), "wait": 0.0, "samples": 0, "mode_sum": torch.zeros(len(MODE_NAMES)),
              "mode_n": torch.zeros(len(MODE_NAMES))}
    preempted = False
    # MFU: model FLOPs of forward + backward counted (torch FlopCounterMode: matmuls, attention)
    # over the first micro-batches of this process, times micro-batches per second, over the peak.
    peak = peak_flops(cuda, bf16)
    flops = {"counted": [], "micro": 0}
    while step < cfg.total_steps:
        step_loss = 0.0
        for _ in range(cfg.grad_accum_steps):
            t0 = time.time()
            batch = to_device(next(loader), device, bf16)
            window["wait"] += time.time() - t0
            counting = peak is not None and len(flops["counted"]) < 3
            if counting:
                from torch.utils.flop_counter import FlopCounterMode

                counter = FlopCounterMode(display=False)
                counter.__enter__()
            out = engine(**batch, mode_weights=weights, generator=gen)
            engine.backward(out["loss"])
            if counting:
                counter.__exit__(None, None, None)
                flops["counted"].append(counter.get_total_flops())
            engine.step()
            flops["micro"] += 1
            step_loss += out["loss"].item() / cfg.grad_accum_steps
            per = out["per_sample"].detach().float().cpu()
            window["mode_sum"].index_add_(0, out["modes"].cpu(), per)
            window["mode_n"].index_add_(0, out["modes"].cpu(), torch.ones_like(per))
            window["samples"] += per.numel() * world
        step += 1
        losses.append(step_loss)
        if ema is not None:
            ema.update(step)
        if step % cfg.log_every == 0 or step == cfg.total_steps:
            elapsed = time.time() - window["t"]
            metrics = {"loss": step_loss, "lr": sched.get_last_lr()[0],
                       "samples_per_s": window["samples"] / max(elapsed, 1e-9),
                       "data_wait_frac": window["wait"] / max(elapsed, 1e-9)}
            if peak is not None and flops["counted"]:
                per_micro = sum(flops["counted"]) / len(flops["counted"])
                metrics["mfu"] = per_micro * flops["micro"] / max(elapsed, 1e-9) / peak
                metrics["tflops_per_rank"] = per_micro * flops["micro"] / max(elapsed, 1e-9) / 1e12
            flops["micro"] = 0
            norm = engine.get_global_grad_norm()
            if norm is not None:
                metrics["grad_norm"] = float(norm)
            for i, name in enumerate(MODE_NAMES):
                if window["mode_n"][i] > 0:
                    metrics[f"loss/{name}"] = float(window["mode_sum"][i] / window["mode_n"][i])
            tracker.log(metrics, step)
            history.append({"step": step, "samples_per_s": metrics["samples_per_s"],
                            "data_wait_frac": metrics["data_wait_frac"], "mfu": metrics.get("mfu")})
            if rank == 0:
                print(f"[train] step {step}/{cfg.total_steps} loss {step_loss:.4f} lr {metrics['lr']:.2e} "
                      f"{metrics['samples_per_s']:.1f} samples/s wait {metrics['data_wait_frac']:.1%}"
                      + (f" MFU {metrics['mfu']:.1%}" if "mfu" in metrics else ""), flush=True)
            window.update(t=time.time(), wait=0.0, samples=0)
            window["mode_sum"].zero_()
            window["mode_n"].zero_()
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.total_steps):
            run_eval(step)
        # every rank must agree to stop, or the checkpoint's collectives would hang
        flag = torch.tensor([1.0 if stop["flag"] else 0.0])
        torch.distributed.all_reduce(flag)
        if flag.item() > 0:
            save(step)
            preempted = True
            marker = os.environ.get("UVA_PREEMPT_MARKER")
            if marker and rank == 0:  # tells the launcher script to requeue, whatever srun's exit code
                Path(marker).write_text(f"step_{step}\n")
            break
        if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
            save(step)
    tracker.close()
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return {"losses": losses, "step": step, "preempted": preempted, "run_id": tracker.run_id,
            "throughput": history, "peak_memory_mb": peak_mb, "memory_kind": "cuda" if cuda else "rss"}


def run(argv: list[str] | None = None) -> dict:
    """Parse the command line, train, write --losses-out, leave the process group; no exit."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--losses-out", default=None, help="write this rank's per-step losses (JSON) here")
    args = p.parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.set)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    result = train(cfg)
    if args.losses_out:
        Path(f"{args.losses_out}.rank{os.environ.get('RANK', 0)}").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        # leave together: srun --kill-on-bad-exit kills the others as soon as one rank exits 124
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def main(argv: list[str] | None = None) -> None:
    sys.exit(PREEMPTED_EXIT if run(argv)["preempted"] else 0)


if __name__ == "__main__":
    main()
