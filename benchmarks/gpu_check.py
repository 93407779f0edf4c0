"""Check a GPU machine end to end and print one table.

    bash scripts/gpu_check.sh                    # installs the wheel set from .whl/ if it is there
    python benchmarks/gpu_check.py [--work DIR] [--json FILE] [--skip-compile]
    python benchmarks/gpu_check.py --quick --device cpu    # the same stages, tiny, on a CPU

Stages, each timed, each a row of the table:
 1. demos    PushT expert demos from the simulator, in memory (one process per core).
 2. encode   the encode job's VAE actor (preprocessing.encode.FrameEncoder) on the device, in
             the precision the encode job would pick there (bf16 on a GPU), into a shard set
             written by the encode job's own shard/index writers (frames come from memory, so
             video decoding is not part of this figure).
 3. train    ``python -m pipeline.train`` at uva-S, 1 rank, DeepSpeed ZeRO-2, bf16, 200 steps:
             samples/s, data wait, MFU, peak memory.
 4. resume   the same command with 20 more steps: it restarts from the step-200 checkpoint.
 5. latency  one policy call at uva-B (the reference layout), batch 1, 16 and 100 sampling
             steps: the step-by-step path in fp32 and bf16, and the static sampler eager,
             CUDA-graphed and compiled (construction, i.e. capture/compilation, timed apart).
 6. policy   the trained run exported as a policy bundle and run closed loop on 5 PushT test
             seeds with the policy on the device (CUDA graph path); the score of a 200-step
             uva-S model is not a quality figure, the row checks the path.

Heavy optional packages are not needed: no Ray, decord, av or submitit; MLflow
logs to a file store (MLFLOW_ALLOW_FILE_STORE=true), so mlflow-skinny suffices.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
ROWS: list[tuple[str, str, str]] = []
FAILED: set[str] = set()  # stages that failed or were skipped: the stages that need them are skipped
OUT: dict = {"dir": None, "count": 0}  # --out: each stage's JSON is written there as it ends


def row(stage: str, what: str, value) -> None:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    ROWS.append((stage, what, text))
    print(f"[gpu-check] {stage:8} {what:44} {text}", flush=True)


def staged(name: str, fn, *args, needs: tuple[str, ...] = ()):
    """Run one stage: its rows, seconds and status (ok, failed with the error, or skipped when a
    stage it needs did not finish) go to ``--out`` as ``NN_<name>.json`` the moment it ends, so
    a crash or a command cut at its time limit still leaves every stage before it."""
    import traceback

    start, t, value = len(ROWS), time.perf_counter(), None
    missing = [n for n in needs if n in FAILED]
    if missing:
        rec = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
        FAILED.add(name)
        print(f"[gpu-check] {name:8} skipped: needs {', '.join(missing)}", flush=True)
    else:
        try:
            value = fn(*args)
            rec = {"status": "ok"}
        except (Exception, SystemExit) as err:  # noqa: BLE001 (the table must go on to the next stage)
            FAILED.add(name)
            rec = {"status": "failed", "error": f"{type(err).__name__}: {err}"[-4000:],
                   "traceback": traceback.format_exc()[-4000:]}
            print(f"[gpu-check] {name:8} FAILED: {rec['error'][:2000]}", flush=True)
    rec.update(stage=name, seconds=round(time.perf_counter() - t, 2), rows=ROWS[start:])
    if OUT["dir"] is not None:
        OUT["count"] += 1
        path = Path(OUT["dir"]) / f"{OUT['count']:02d}_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(rec, indent=1))
        path.with_suffix(".tmp").rename(path)
    return value


def stage_demos(args) -> list:
    from uva_sim.pusht.runner import run_parallel

    t = time.perf_counter()
    seeds = list(range(args.demos))
    results = list(run_parallel("expert", seeds, workers=min(args.workers, len(seeds)), max_steps=args.demo_steps,
                                record=True, obs_size=96))
    frames = sum(len(r.frames) for r in results)
    row("demos", f"{len(results)} PushT expert episodes, frames", frames)
    row("demos", "seconds", time.perf_counter() - t)
    return results


def stage_encode(args, results, out: Path) -> dict:
    from preprocessing.encode import EncodeConfig, FrameEncoder
    from preprocessing.encode_latents import finalize, write_complete_shard
    from preprocessing.sources import Episode
    from uva.vae import vae_identity
    from uva_io.assets import find_artifact
    from uva_io.config import load_config, to_dict
    from uva_io.vae_bundle import resolve_precision
    from uva_io.video import resize_center_crop

    cfg = load_config(EncodeConfig, str(ROOT / "configs/preprocess/default.yaml"), [])
    vae_path = str(find_artifact(cfg.vae))
    on_gpu = args.device == "cuda"
    precision = resolve_precision(cfg.vae_precision, on_gpu)
    enc = FrameEncoder(vae_path, None, cfg.batch_size, threads=os.cpu_count() or 1, precision=precision)
    vae_id = vae_identity(enc.vae)
    eps, encoded, frames = [], {}, 0
    enc.encode_frames(resize_center_crop(results[0].frames[:8], cfg.resolution))  # warm-up
    seconds = 0.0
    for j, res in enumerate(results):
        ep = Episode(episode_id=f"ep{j:05d}", videos={"main": "memory"}, robot="pusht", fps=10.0, source="gpu-check")
        decoded = {"episode_id": ep.episode_id, "frames": {"main": resize_center_crop(res.frames, cfg.resolution)},
                   "arrays": {"actions": res.actions.astype(np.float32), "proprio": res.agent_pos.astype(np.float32)},
                   "source_fps": 10.0, "num_source_frames": len(res.frames),
                   "frame_index": np.arange(len(res.frames))}  # one control row per frame (10 Hz)
        if on_gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        encoded[j] = enc.encode_episode(decoded)
        if on_gpu:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t
        eps.append(ep)
        frames += len(res.frames)
    out.mkdir(parents=True, exist_ok=True)
    write_complete_shard(out, cfg, 0, eps, encoded, vae_id, precision)
    finalize(out, cfg, [eps], [], vae_id, {"vae_config": to_dict(enc.vae.config)}, frames, seconds, strict=False)
    row("encode", f"VAE on {enc.device}, {precision}: frames", frames)
    row("encode", "frames/s (VAE step)", frames / seconds)
    return {"vae": vae_path, "vae_id": vae_id, "precision": precision, "resolution": cfg.resolution}


def train_command(args, latents: Path, run_dir: Path, steps: int) -> list[str]:
    sets = [f"data.sources=[{{path: {latents}}}]", "eval_sources=[]", "eval_every=0", f"total_steps={steps}",
            f"checkpoint_every={args.train_steps}", "log_every=20", f"run_dir={run_dir}", "zero_stage=2",
            f"tracking_uri=file:{run_dir / 'mlruns'}", "data.normalization=q01_q99", "optim.warmup_steps=20",
            "data.num_views=1", "data.action_dim=2",  # PushT alone: one camera, 2-d actions (the bundle's)
            f"data.num_workers={args.data_workers}", f"micro_batch_size={args.batch}"]
    if args.device == "cuda":
        sets += ["precision=bf16", f"model.size={args.train_size}",
                 "model.overrides={latent_channels: 16, latent_size: 12, patch_size: 2}"]
    cmd = [sys.executable, "-m", "pipeline.train", "--config", str(ROOT / "configs/pretrain/default.yaml")]
    return cmd + [a for s in sets for a in ("--set", s)] + ["--losses-out", str(run_dir / "result")]


def run_train(cmd: list[str], run_dir: Path) -> tuple[dict, str, float]:
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(Path(f"{run_dir / 'result'}.rank0").read_text()), proc.stdout, wall


def stage_train(args, latents: Path, run_dir: Path) -> None:
    res, _, wall = run_train(train_command(args, latents, run_dir, args.train_steps), run_dir)
    hist = res["throughput"][1:] or res["throughput"]  # the first window holds the warm-up
    row("train", f"{args.train_size if args.device == 'cuda' else 'embedded default'}, {args.train_steps} steps, "
        f"wall s", wall)
    row("train", f"samples/s (batch {args.batch})", statistics.median(h["samples_per_s"] for h in hist))
    row("train", "data wait", f"{statistics.median(h['data_wait_frac'] for h in hist):.2%}")
    mfu = [h["mfu"] for h in hist if h.get("mfu") is not None]
    row("train", "MFU (dense bf16 peak)", f"{statistics.median(mfu):.1%}" if mfu else "n/a (no peak known)")
    row("train", f"peak memory MB ({res['memory_kind']})", float(res["peak_memory_mb"]))
    row("train", "loss first / last", f"{res['losses'][0]:.4f} / {res['losses'][-1]:.4f}")


def stage_resume(args, latents: Path, run_dir: Path) -> None:
    more = args.train_steps + args.resume_steps
    res, out, wall = run_train(train_command(args, latents, run_dir, more), run_dir)
    resumed = f"resumed from step_{args.train_steps}" in out
    if not resumed or res["step"] != more:
        sys.exit(f"resume did not continue from step {args.train_steps}:\n{out[-3000:]}")
    row("resume", f"restart at step {args.train_steps} + {args.resume_steps} steps, wall s", wall)
    row("resume", "loss after resume (finite)", f"{res['losses'][0]:.4f}")


def stage_export(args, latents: Path, run_dir: Path, enc: dict, bundle: Path) -> None:
    from pipeline.components.checkpoint import export_weights
    from pipeline.export import export_bundle
    from pipeline.robots import check_stats, load_robot
    from uva_io.shardset import read_stats

    cfg = json.loads((run_dir / "config.json").read_text())
    w = cfg["data"]["window"]
    robot = load_robot("pusht")
    _, weights, arch = export_weights(run_dir / "checkpoints")
    window = {k: w[k] for k in ("num_history", "num_future", "frame_stride", "action_horizon")}
    export_bundle(bundle, weights, arch, robot, check_stats(robot, read_stats(latents), str(latents)), window,
                  enc["vae"], enc["vae_id"], 16, vae_precision=enc["precision"])


def timed_calls(fn, calls: int, cuda: bool) -> float:
    # a sibling script: benchmarks/ is this script's folder, first on its path
    from bench_inference import median_ms

    return median_ms(fn, calls, cuda, warmup=0)


def stage_latency(args) -> None:
    from uva import UVA, count_parameters, model_config, rng
    from uva.sampler import ActionSampler

    cuda = args.device == "cuda"
    torch.manual_seed(0)
    model = UVA(model_config(args.latency_size)).to(args.device).eval()
    c = model.cfg
    row("latency", f"{args.latency_size} parameters (M)", count_parameters(model)["total"] / 1e6)
    hist = torch.randn(1, c.num_history, c.latent_channels, c.latent_size, c.latent_size, device=args.device)
    gen = rng.generator(0, args.device)
    bf16 = None
    if cuda:
        import copy

        bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for steps in args.latency_steps:
        calls = args.calls if steps <= 16 else max(5, args.calls // 4)
        ms = timed_calls(lambda: model.predict_action(hist, num_steps=steps, generator=gen), calls, cuda)
        row("latency", f"{steps} steps: step-by-step fp32 ms", ms)
        if bf16 is not None:
            ms = timed_calls(lambda: bf16.predict_action(hist, num_steps=steps, generator=gen), calls, cuda)
            row("latency", f"{steps} steps: step-by-step bf16 ms", ms)
        backends = ["eager"] + (["graph"] + ([] if args.skip_compile else ["compile"]) if cuda else [])
        for backend in backends:
            t = time.perf_counter()
            sampler = ActionSampler(bf16 if bf16 is not None else model, steps, backend=backend)
            setup = time.perf_counter() - t
            ms = timed_calls(lambda: sampler(hist, generator=gen), calls, cuda)
            row("latency", f"{steps} steps: static {backend}{' bf16' if bf16 is not None else ''} ms "
                f"(setup {setup:.1f} s)", ms)
            sampler = None  # frees its graph and buffers before the next


def stage_policy(args, bundle: Path) -> None:
    from pipeline.policy import load_policy
    from uva_sim.pusht.runner import TEST_SEEDS, evaluate_policy

    t = time.perf_counter()
    policy = load_policy(bundle, device=args.device)
    row("policy", f"bundle loaded on {args.device} ({policy.backend}, {policy.precision}), s", time.perf_counter() - t)
    frames = np.zeros((policy.num_obs, 96, 96, 3), np.uint8)
    ms = timed_calls(lambda: policy({"image": frames, "agent_pos": np.zeros((policy.num_obs, 2))}, 8),
                     args.calls, args.device == "cuda")
    row("policy", "one call incl. VAE encode of the frames, ms", ms)
    policy = None
    seeds = TEST_SEEDS[: args.seeds]
    res = evaluate_policy(functools.partial(load_policy, bundle, device=args.device), seeds,
                          workers=min(args.workers, len(seeds)), max_steps=args.eval_steps, log=None)
    row("policy", f"PushT closed loop, {len(seeds)} test seeds: score", res["score"])
    row("policy", "successes / wall s", f"{sum(e['success'] for e in res['episodes'])} / {res['seconds']:.1f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", default="/tmp/uva_gpu_check", help="scratch folder (demos' latents, run, bundle)")
    p.add_argument("--json", default=None, help="also write the table here")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the stages, measures nothing")
    p.add_argument("--skip-compile", action="store_true", help="leave torch.compile out of the latency rows")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=None, help="write each stage's rows and status here as NN_<stage>.json as it ends")
    p.add_argument("--train-steps", type=int, default=None, help="training steps (default 200; --quick 4)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    OUT["dir"] = args.out
    q = args.quick
    args.demos, args.demo_steps = (2, 30) if q else (16, 300)
    steps = args.train_steps
    args.train_steps, args.resume_steps, args.batch = (4, 2, 8) if q else (200, 20, 64)
    args.train_steps = steps or args.train_steps
    args.train_size, args.latency_size = "uva-S", "uva-tiny" if q else "uva-B"
    args.latency_steps, args.calls = ([4], 3) if q else ([16, 100], 40)
    args.seeds, args.eval_steps = (1, 10) if q else (5, 300)
    args.data_workers = 1 if q else 4
    work = Path(args.work)
    latents, run_dir, bundle = work / "latents", work / "train", work / "bundle"
    for path in (latents, run_dir, bundle):
        if path.exists():
            import shutil

            shutil.rmtree(path)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"[gpu-check] {name}; torch {torch.__version__}; python {sys.version.split()[0]}", flush=True)
    started = time.perf_counter()
    results = staged("demos", stage_demos, args)
    enc = staged("encode", stage_encode, args, results, latents, needs=("demos",))
    staged("train", stage_train, args, latents, run_dir, needs=("encode",))
    staged("resume", stage_resume, args, latents, run_dir, needs=("train",))
    staged("export", stage_export, args, latents, run_dir, enc, bundle, needs=("train",))
    staged("latency", stage_latency, args)
    staged("policy", stage_policy, args, bundle, needs=("export",))
    staged("total", lambda: row("total", "wall s", time.perf_counter() - started))
    width = max(len(w) for _, w, _ in ROWS)
    print(f"\n{name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    print(f"| stage | {'figure':{width}} | value |\n|---|{'-' * (width + 2)}|---|")
    for stage, what, value in ROWS:
        print(f"| {stage} | {what:{width}} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": ROWS,
                                               "failed": sorted(FAILED)}, indent=1))
    if FAILED:
        sys.exit(f"[gpu-check] stages that did not finish: {', '.join(sorted(FAILED))}")


if __name__ == "__main__":
    main()
