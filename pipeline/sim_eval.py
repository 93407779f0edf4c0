"""`uva-eval`: closed-loop evaluation of a policy in simulation, logged to MLflow when asked.

    uva-eval --env pusht --policy expert --workers 2 --output runs/eval/expert
    uva-eval --env pusht --policy runs/default/finetune/export --tracking-uri sqlite:///runs/default/finetune/mlflow.db --run-id RUN

``--policy`` is 'expert' (the planner; needs the simulator state), 'random', or an exported
policy bundle folder. Results (score, success rate, per-seed rows) go to OUTPUT/results.json and
rollout videos to OUTPUT/videos/. With --run-id the figures and videos are added to that MLflow
run (e.g. the fine-tuning run); with --experiment a new run is made.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

ENVS = ("pusht",)


def log_to_mlflow(result: dict, out_dir: Path, tracking_uri: str | None, run_id: str | None,
                  experiment: str | None, prefix: str = "pusht") -> str:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if run_id:
        run = mlflow.start_run(run_id=run_id)
    else:
        name = experiment or "uva-eval"
        if mlflow.get_experiment_by_name(name) is None:
            # a local store keeps artifacts beside the results, not in the working directory
            local = not tracking_uri or tracking_uri.startswith(("sqlite:", "file:", "/"))
            mlflow.create_experiment(name, artifact_location=(out_dir / "mlartifacts").resolve().as_uri()
                                     if local else None)
        mlflow.set_experiment(name)
        run = mlflow.start_run(run_name=f"eval-{Path(str(result['policy'])).name}")
    with run:
        mlflow.log_metrics({f"{prefix}/score": result["score"], f"{prefix}/success_rate": result["success_rate"],
                            f"{prefix}/mean_steps": result["mean_steps"]})
        mlflow.log_artifact(str(out_dir / "results.json"), artifact_path=f"{prefix}_eval")
        videos = out_dir / "videos"
        if videos.is_dir():
            mlflow.log_artifacts(str(videos), artifact_path=f"{prefix}_eval/videos")
        return run.info.run_id


def default_action_steps(policy: str) -> int:
    """Half the control steps one chunk of a bundle covers (replanning before the chunk runs
    out, as Diffusion Policy executes 8 of 16); 8 for the built-in policies."""
    meta = Path(policy) / "policy.json"
    if policy in ("expert", "random") or not meta.is_file():
        return 8
    from pipeline.policy import control_steps_per_action

    bundle = json.loads(meta.read_text())
    return max(1, int(bundle["window"]["action_horizon"]) * control_steps_per_action(bundle) // 2)


def run(argv: list[str] | None = None) -> dict:
    """Parse, evaluate, report; returns the result dict."""
    from pipeline.policy import POLICY_BACKENDS, load_policy
    from uva_sim.pusht.runner import TEST_SEEDS, evaluate_policy, parse_seeds, write_report

    p = argparse.ArgumentParser(prog="uva-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="pusht", choices=ENVS)
    p.add_argument("--policy", required=True, help="'expert', 'random', or an exported policy bundle folder")
    p.add_argument("--seeds", default=f"{TEST_SEEDS[0]}:{TEST_SEEDS[-1] + 1}",
                   help="half-open range A:B or a comma list (default: the 50 protocol test seeds)")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--action-steps", type=int, default=None,
                   help="actions executed per policy call (default: half of a bundle's chunk, a receding "
                        "horizon; 8 for expert and random)")
    p.add_argument("--output", default=None, help="results folder (default runs/eval/<policy name>)")
    p.add_argument("--no-videos", action="store_true", help="do not save rollout videos")
    p.add_argument("--device", default="cpu", help="torch device for bundle policies (cuda: bf16 + CUDA graph)")
    p.add_argument("--backend", default="auto", choices=POLICY_BACKENDS,
                   help="policy call path (auto: graph on cuda, step by step on cpu)")
    p.add_argument("--sampling-steps", type=int, default=None,
                   help="reverse diffusion steps of a bundle policy (default: the bundle's)")
    p.add_argument("--temperature", type=float, default=None,
                   help="noise scale of each reverse step of a bundle policy (default: the bundle's, 1)")
    p.add_argument("--action-clip", type=float, default=None,
                   help="bound on the sampled normalized actions of a bundle policy (default: the model's; 0 = none)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--run-id", default=None, help="add the results to this MLflow run")
    p.add_argument("--experiment", default=None, help="MLflow experiment for a new run (with --tracking-uri)")
    args = p.parse_args(argv)
    if args.action_steps is None:
        args.action_steps = default_action_steps(args.policy)
    if args.max_steps < 1 or args.action_steps < 1 or args.workers < 1:
        p.error("--max-steps, --action-steps and --workers must be >= 1")
    seeds = parse_seeds(args.seeds)
    name = "expert" if args.policy == "expert" else "random" if args.policy == "random" else Path(args.policy).name
    out = Path(args.output or f"runs/eval/{name}")
    spec = args.policy
    if spec not in ("expert", "random"):
        if not Path(spec).is_dir():
            p.error(f"--policy {spec}: not 'expert' or 'random', and no policy bundle folder there")
        spec = functools.partial(load_policy, spec, device=args.device, sampling_steps=args.sampling_steps,
                                 temperature=args.temperature, backend=args.backend, action_clip=args.action_clip)
    result = evaluate_policy(spec, seeds, workers=min(args.workers, len(seeds)), max_steps=args.max_steps,
                             action_steps=args.action_steps, video_dir=None if args.no_videos else out / "videos",
                             name=args.policy)
    path = write_report(result, out)
    print(f"[eval] {args.env} policy {args.policy}: score {result['score']:.4f}, success rate "
          f"{result['success_rate']:.3f} over {result['num_episodes']} seeds, mean steps {result['mean_steps']:.1f} "
          f"({result['seconds']:.1f} s) -> {path}")
    if args.run_id or args.experiment or args.tracking_uri:
        rid = log_to_mlflow(result, out, args.tracking_uri, args.run_id, args.experiment)
        print(f"[eval] logged to MLflow run {rid}")
    return result


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
