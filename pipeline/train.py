"""Training entry point: DeepSpeed ZeRO over latent shards, mixed masking, MLflow, exact resume.

One entry point for every launcher (local, torchrun, srun, submitit):

    uva-pretrain --config configs/pretrain/default.yaml [--set optim.lr=3e-4] [--nproc 2]
    srun uva-pretrain --config ...          (slurm/pretrain.sh)

Setup, then a loop that reads top to bottom; the pieces around it are components
(pipeline/components/: distributed, engine, lr_schedule, ema, checkpoint, metrics). Everything
is counted in optimizer steps. Checkpoints go to ``run_dir/checkpoints/step_N`` (with each
rank's data position, so a resume reads no data twice) and are only used on resume once complete; SIGUSR1/SIGUSR2/SIGTERM (Slurm's warning, preemption) make every
rank checkpoint at the next step boundary and exit with code 124.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from pipeline.components.checkpoint import RunCheckpoints, resolve_weights
from pipeline.weights import imported_from, load_partial, load_weights
from pipeline.components.distributed import PREEMPTED_EXIT, Preemption, init_distributed, leave_process_group
from pipeline.components.ema import EMA
from pipeline.components.engine import build_engine
from pipeline.components.metrics import FlopCounter, StepMeter, Tracker, peak_flops
from pipeline.data import DataPosition, batch_to_device, batches, make_loader
from pipeline.train_config import TrainConfig
from pipeline.validation import Validator
from uva import UVA, count_parameters, model_config, rng
from uva.config import UVAConfig
from uva.modes import mode_weights_tensor
from uva_io.config import load_config, to_dict


def resolve_conditioning(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with what the model is conditioned on fixed in both the model and the data
    sections: the embodiment list and the language input (size and text encoder).

    Embodiments, in this order of precedence: ``model.overrides.embodiments`` as given; the run's
    own latest checkpoint (a resume keeps its table, an older run without one stays without); the
    robots of the ``init_from`` model first, then any new robot of the sources; else the sorted
    robot names of data.sources and eval_sources (human video included: an action-free
    embodiment). Language: ``model.overrides.lang_dim`` as given; the run's own checkpoint; the
    ``init_from`` model's encoder; else the encoder of the sources that hold instructions (none:
    no language input). Sources embedded by two different encoders are an error naming them."""
    import json

    from pipeline.components.checkpoint import resolve_weights
    from uva_io.shardset import load_index

    ckpts = RunCheckpoints(Path(cfg.run_dir) / "checkpoints")
    step = ckpts.latest_step()
    arch_file = ckpts.step_dir(step) / "model_config.json" if step is not None else None
    own = json.loads(arch_file.read_text()) if arch_file is not None and arch_file.is_file() else None
    init = resolve_weights(cfg.init_from, cfg.init_weights, "init_from")[1] or {} if cfg.init_from else {}
    sources = [*cfg.data.sources, *cfg.eval_sources]
    indexes = {src.path: load_index(src.path) for src in sources} if own is None else {}
    overrides = dict(cfg.model.overrides)

    given = overrides.get("embodiments")
    if given is None and own is not None:
        given = own.get("embodiments", [])
    if given is None:
        names = sorted({r for index in indexes.values() for r in index.get("robots", [])})
        base = list(init.get("embodiments", []))
        given = base + [n for n in names if n not in base]
    overrides["embodiments"] = list(given)

    if "lang_dim" not in overrides:
        text = _text_encoder_of(own) if own is not None else _text_encoder_for(indexes, _text_encoder_of(init))
        overrides["lang_dim"], overrides["text_encoder"] = int(text.get("dim", 0)), dict(text)
        if text:
            overrides["lang_tokens"] = int(text.get("tokens", 16))
    text = overrides.get("text_encoder") or {}
    # the action width: a resumed run's own; else data.action_dim (checked against every robot of
    # the mix) or the widest robot's
    from pipeline.data import action_width, merged_stats

    width = int(own["action_dim"]) if own is not None and cfg.data.action_dim in (0, own.get("action_dim")) \
        else action_width(cfg.data, merged_stats(sources))
    return replace(cfg, model=replace(cfg.model, overrides=overrides),
                   data=replace(cfg.data, action_dim=width, embodiments=list(given), lang_dim=int(overrides["lang_dim"]),
                                lang_tokens=int(overrides.get("lang_tokens", 16)), text_encoder=text.get("identity")))


def _text_encoder_of(arch: dict) -> dict:
    """The text encoder record of a model config ({} for a model without language)."""
    return (arch.get("text_encoder") or {}) if arch.get("lang_dim") else {}


def _text_encoder_for(indexes: dict[str, dict], base: dict) -> dict:
    """The text encoder of the sources that hold instructions ({} when none do), which must be
    one, and ``base``'s (the init_from model's) when that has one."""
    found = {}
    for path, index in indexes.items():
        if index.get("text_encoder"):
            found.setdefault(index["text_encoder"]["identity"], (path, index["text_encoder"]))
    if len(found) > 1:
        sets = "; ".join(f"{p} by {te['spec']} ({ident})" for ident, (p, te) in found.items())
        raise ValueError(f"data sources hold instructions embedded by different text encoders: {sets}; "
                         f"re-encode them with one text_encoder")
    text = next(iter(found.values()))[1] if found else {}
    if base and text and base["identity"] != text["identity"]:
        raise ValueError(f"init_from model takes instructions embedded by {base['spec']} ({base['identity']}), "
                         f"the data's are by {text['spec']} ({text['identity']}): re-encode the data with "
                         f"text_encoder={base['spec']}")
    return base or text


def build_model(cfg: TrainConfig, rank: int, load=load_weights) -> tuple[UVA, UVAConfig]:
    """The model of ``cfg``: its size with the data layout, ``init_from`` weights loaded by
    ``load(model, state, source, size) -> re-created names`` (exact by default; fine-tuning passes
    its adaptation rule), and the ``freeze`` prefixes fixed."""
    w = cfg.data.window
    if not cfg.data.action_dim:  # not resolved by training (a direct call): the widest robot of the sources
        from pipeline.data import action_width, merged_stats

        cfg = replace(cfg, data=replace(cfg.data, action_dim=action_width(cfg.data, merged_stats(
            [*cfg.data.sources, *cfg.eval_sources]))))
    mcfg = model_config(cfg.model.size, **{**cfg.model.overrides, "num_history": w.num_history,
                                           "num_future": w.num_future, "action_horizon": w.action_horizon,
                                           "action_dim": cfg.data.action_dim, "proprio_dim": cfg.data.proprio_dim,
                                           "num_views": cfg.data.num_views})
    model = UVA(mcfg)
    if cfg.init_from:
        from safetensors.torch import load_file

        source, _ = resolve_weights(cfg.init_from, cfg.init_weights, "init_from")
        if imported_from(source):  # uva-import's partial initialization (e.g. MAR's weights)
            new = load_partial(model, load_file(str(source)), source)
            if rank == 0:
                print(f"[train] initialized from {source} ({imported_from(source)} import); "
                      f"{len(new)} tensors keep their fresh init", flush=True)
        else:
            recreated = load(model, load_file(str(source)), source, cfg.model.size)
            if rank == 0:
                print(f"[train] initialized from {source}"
                      + (f"; new for this robot: {', '.join(recreated)}" if recreated else ""), flush=True)
    frozen = freeze_parameters(model, cfg.freeze)
    if rank == 0 and frozen:
        print(f"[train] frozen: {frozen} parameters under {', '.join(cfg.freeze)}", flush=True)
    return model, mcfg


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


def train(cfg: TrainConfig, load=load_weights) -> dict:
    """Run (or resume) training; returns this process's per-step losses, the final step, whether
    it stopped for a preemption, the MLflow run id, throughput windows and peak memory."""
    # -- setup -----------------------------------------------------------------------------------
    dist, device = init_distributed()
    rank, world = dist.rank, dist.world_size
    print(f"[train] rank {rank}/{world}, local rank {dist.local_rank}, device {device}", flush=True)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    run_dir = Path(cfg.run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    cfg = resolve_conditioning(cfg)
    model, mcfg = build_model(cfg, rank, load)
    engine, sched = build_engine(model, cfg, world, bf16)
    ema = EMA(engine.module, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    gen = rng.generator(cfg.seed * 1000 + rank, device)  # masks, modes and noise, drawn on the device

    ckpts = RunCheckpoints(run_dir / "checkpoints", cfg.keep_last)
    step, run_id, data_saved = 0, None, None
    resumed = ckpts.load_latest(engine, rank, world)
    if resumed:
        step, client, local = resumed
        data_saved = local.get("data")
        run_id = client.get("mlflow_run_id")
        gen.set_state(local["generator"])
        torch.set_rng_state(local["torch_rng"])
        if ema is not None:
            ema.load_state(local["ema"])
        if rank == 0:
            print(f"[train] resumed from step_{step} at step {step}", flush=True)
    tracker = Tracker(run_dir, cfg.experiment, cfg.tracking_uri, rank, run_id, to_dict(cfg))
    if rank == 0 and not run_id:
        (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        tracker.artifact(run_dir / "config.json")
        print(f"[train] {cfg.model.size}: {count_parameters(model)['total'] / 1e6:.2f}M params, "
              f"{world} rank(s), ZeRO-{cfg.zero_stage}, {'bf16' if bf16 else 'fp32'}", flush=True)

    def save(at: int) -> None:
        client = {"step": at, "world_size": world, "mlflow_run_id": tracker.run_id, "config": to_dict(cfg)}
        local = {"generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                 "ema": ema.state() if ema is not None else [], "data": position.state()}
        ckpts.save(engine, at, rank=rank, client=client, local=local, model_config=asdict(mcfg), ema=ema,
                   zero3=cfg.zero_stage == 3)
        if rank == 0:
            print(f"[train] checkpoint step_{at}", flush=True)

    validator = Validator(cfg, rank, world, device, bf16, tracker)
    weights = mode_weights_tensor(cfg.mode_weights)
    meter, flops = StepMeter(world), FlopCounter(peak_flops(device, bf16))
    losses: list[float] = []
    history: list[dict] = []
    preempted = False

    # -- the loop --------------------------------------------------------------------------------
    # Preemption handlers go in before the loader's worker processes fork: Slurm signals every
    # process of a job step, and a worker with the default handler would die of it.
    # The data position is part of the checkpoint: resuming costs the same at any step.
    position = DataPosition(cfg.data.num_workers, data_saved)
    with Preemption() as preempt, \
            batches(make_loader(cfg.data, cfg.micro_batch_size, rank, world, resume=data_saved)) as loader:
        if resumed and data_saved is None:  # a checkpoint from before positions were saved
            for _ in range(step * cfg.grad_accum_steps):  # replay the deterministic stream
                position.take(next(loader))
        while step < cfg.total_steps:
            step_loss = 0.0
            for _ in range(cfg.grad_accum_steps):
                with meter.waiting():
                    batch = batch_to_device(position.take(next(loader)), device)
                with flops.count():
                    out = engine(**batch, mode_weights=weights, generator=gen)
                    engine.backward(out["loss"])
                engine.step()
                step_loss += out["loss"].item() / cfg.grad_accum_steps
                meter.add(out)
            step += 1
            losses.append(step_loss)
            if ema is not None:
                ema.update(step)

            if step % cfg.log_every == 0 or step == cfg.total_steps:
                window, elapsed = meter.report()
                metrics = {"loss": step_loss, "lr": sched.get_last_lr()[0], **window, **flops.report(elapsed)}
                norm = engine.get_global_grad_norm()
                if norm is not None:
                    metrics["grad_norm"] = float(norm)
                tracker.log(metrics, step)
                history.append({"step": step, "samples_per_s": metrics["samples_per_s"],
                                "data_wait_frac": metrics["data_wait_frac"], "mfu": metrics.get("mfu")})
                if rank == 0:
                    print(f"[train] step {step}/{cfg.total_steps} loss {step_loss:.4f} lr {metrics['lr']:.2e} "
                          f"{metrics['samples_per_s']:.1f} samples/s wait {metrics['data_wait_frac']:.1%}"
                          + (f" MFU {metrics['mfu']:.1%}" if "mfu" in metrics else ""), flush=True)
            if validator.due(step):
                validator.run(engine.module, step)

            if preempt.agreed():
                save(step)
                preempted = True
                marker = os.environ.get("UVA_PREEMPT_MARKER")
                if marker and rank == 0:  # tells the launcher script to requeue, whatever srun's exit code
                    Path(marker).write_text(f"step_{step}\n")
                break
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                save(step)
    tracker.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return {"losses": losses, "step": step, "preempted": preempted, "run_id": tracker.run_id,
            "throughput": history, "peak_memory_mb": peak_mb, "memory_kind": "cuda" if device.type == "cuda" else "rss"}


def run(argv: list[str] | None = None) -> dict:
    """Parse the command line, train, write --losses-out, leave the process group; no exit."""
    p = argparse.ArgumentParser(prog="uva-pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="YAML training config (a path, or one under configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted config override")
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
    leave_process_group()
    return result


def main(argv: list[str] | None = None) -> None:
    sys.exit(PREEMPTED_EXIT if run(argv)["preempted"] else 0)


if __name__ == "__main__":
    main()
