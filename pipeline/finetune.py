"""Fine-tuning a pretrained UVA model to a target robot, then exporting its policy bundle.

    uva-finetune --robot franka --pretrained runs/pretrain/checkpoints --data data/franka_latents \
        [--config configs/finetune/default.yaml] [--set train.micro_batch_size=16] [--nproc 2 | --submitit ...]

Steps (every rank runs them; the same entry point works under torchrun, srun and submitit):
1. The robot comes from configs/robots/<name>.yaml; the target shards must hold that robot's
   actions with its action dimension; their statistics (stats.json, computed at encode time)
   normalize the actions with the robot's mode and mask. When the robot names proprioception
   (and use_proprio is on), the shards must carry it; it is normalized the same way and given
   to the model as input (a new, zero-initialized projection onto the buffer tokens). With
   ``relative_actions`` the chunks are offsets from the robot's state at the last history frame
   (for the action dimensions its YAML relates to proprioception, ``relative_to``), normalized
   with statistics of such chunks computed from the shards here.
2. The pretrained weights (a checkpoints folder, a step_N folder, an exported bundle, or a
   .safetensors file) are loaded with the architecture they were trained with. Backbone, video
   head and embeddings are kept; the action embedding and action head are re-created when the
   robot's action dimension (or the chunk length) differs; a robot the pretraining did not see
   gets its own embodiment row; the camera views follow the robot's cameras.
3. The recipe's stages run in order (e.g. heads with the backbone frozen, then everything at a
   lower learning rate), each a normal training run with its own checkpoints and MLflow run in
   one experiment; a finished stage is skipped on rerun, an interrupted one resumes.
4. Rank 0 exports the last stage's EMA weights as a bundle (pipeline/export.py) in RUN/export.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.data import SourceConfig
from pipeline.train_config import ModelSection, TrainConfig
from uva_io import storage
from uva_io.shardset import read_stats


STAGE_KINDS = ("joint", "action_head")

# Keys of the shared training section that every stage sets anyway (from the stage, the robot's
# YAML, the checkpoint or the command line): a recipe that sets them would be overwritten without
# a word, so it is refused, with where the value goes instead.
STAGE_SET_KEYS = {
    "train.total_steps": "stages[].steps",
    "train.optim.lr": "stages[].lr",
    "train.optim.warmup_steps": "stages[].warmup_steps",
    "train.freeze": "stages[].freeze",
    "train.run_dir": "run_dir (or --run-dir); each stage runs in RUN_DIR/stage<i>_<name>",
    "train.init_from": "--pretrained (each later stage starts from the stage before)",
    "train.experiment": "experiment (the recipe's top level)",
    "train.data.sources": "--data",
    "train.data.action_dim": "the robot's YAML (action_names)",
    "train.data.num_views": "the robot's YAML (cameras)",
    "train.data.proprio_dim": "the robot's YAML (proprio_names) and use_proprio",
    "train.data.normalization": "the robot's YAML (normalization)",
    "train.data.norm_mask": "the robot's YAML (unnormalized)",
    "train.data.vae_identity": "nowhere: the --data shard sets' index names their VAE",
    "train.data.relative_actions": "relative_actions (the recipe's top level)",
}


@dataclass
class StageConfig:
    """One fine-tuning stage."""

    name: str
    steps: int
    lr: float
    warmup_steps: int = 0
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes (backbone, video_head, embed...)
    # joint: masked training of the whole model (DeepSpeed, the recipe's batch and modes);
    # action_head: the action head alone on the policy conditions of every training window,
    # computed once with the rest of the model fixed (pipeline/head_fit.py)
    kind: str = "joint"
    batch_size: int = 256  # action_head: condition rows per step (joint stages use train.micro_batch_size)

    def validate(self) -> None:
        if self.steps <= 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"stage '{self.name}': steps and lr must be positive, warmup_steps >= 0")
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage '{self.name}': kind must be one of {', '.join(STAGE_KINDS)}, got {self.kind!r}")
        if self.kind == "action_head" and self.freeze:
            raise ValueError(f"stage '{self.name}': an action_head stage trains the action head alone; "
                             f"freeze has no meaning there (got {self.freeze})")
        if self.batch_size <= 0:
            raise ValueError(f"stage '{self.name}': batch_size must be positive, got {self.batch_size}")


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe: shared training settings and the stages."""

    train: TrainConfig = field(default_factory=TrainConfig)  # window, batch, ZeRO, eval... (not data.sources)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig("full", 1000, 1e-4)])
    model_size: str | None = None  # refuse a checkpoint of another size (None = any)
    export_sampling_steps: int = 16  # diffusion steps the exported policy samples with
    use_proprio: bool = True  # give the model the robot's proprioception (when its YAML names some)
    # predict each chunk as offsets from the robot's state at the last history frame (the action
    # dimensions the robot's YAML relates to proprioception: relative_to); the policy adds it back
    relative_actions: bool = False
    # the pretrained model's architecture with fresh weights: the control run of a pretraining
    # benefit measurement (same model, recipe and steps; only the initialization differs)
    from_scratch: bool = False
    run_dir: str = "runs/finetune"
    experiment: str | None = None  # MLflow experiment of the stages' runs (None: uva-finetune-<robot>)
    # the action layers' width: "robot" (the robot's own action dimension; the pretrained action
    # embedding and head are re-created when it differs) or "pretrained" (the pretrained model's
    # width when it is wider, the robot's actions padded and the padding masked as in the
    # pretraining mix, so the pretrained action embedding and head are kept)
    action_width: str = "robot"
    # the data's camera of each robot camera whose names differ ({exterior: front}; null: a camera
    # of the robot this data does not have); every other camera of the robot must be in the data
    # and every camera of the data the robot's (after this mapping)
    cameras: dict[str, str | None] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.stages:
            raise ValueError("stages: a recipe needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must be unique, got {names}")
        if self.action_width not in ("robot", "pretrained"):
            raise ValueError(f"action_width must be robot or pretrained, got {self.action_width!r}")


def dotted_keys(data: dict, prefix: str = "") -> list[str]:
    """Every key of a nested mapping, dotted, parents before their children."""
    keys = []
    for k, v in data.items():
        keys.append(f"{prefix}{k}")
        if isinstance(v, dict):
            keys += dotted_keys(v, f"{prefix}{k}.")
    return keys


def load_recipe(path, overrides: list[str] | None = None) -> FinetuneConfig:
    """The recipe at ``path`` with dotted ``overrides``; a key that the stages set anyway
    (STAGE_SET_KEYS) is a ValueError naming it and where to set it instead."""
    from uva_io.config import apply_overrides, from_dict, read_yaml

    data = apply_overrides(read_yaml(path) if path else {}, list(overrides or []))
    for key in dotted_keys(data):
        if key in STAGE_SET_KEYS:
            raise ValueError(f"recipe key '{key}' would be overwritten by every stage; set it in "
                             f"{STAGE_SET_KEYS[key]} instead")
    return from_dict(FinetuneConfig, data)


def resolve_pretrained(path: str | Path) -> tuple[Path, dict | None]:
    """(weights file, architecture or None) of a checkpoints folder, step folder, bundle or .safetensors."""
    from pipeline.components.checkpoint import resolve_weights
    from pipeline.export import bundle_weights

    return bundle_weights(path) or resolve_weights(path, "ema", "--pretrained")


def fit_window(window, num_history: int, num_future: int):
    """The recipe's window on the pretrained frame layout: ``num_history``/``num_future`` from the
    checkpoint, ``frame_stride`` from the recipe, and the recipe's ``action_horizon`` when it fits
    that layout (a multiple of num_future that divides num_future * frame_stride); otherwise the
    largest horizon up to it that does. Returns (window, a line saying what was changed or '')."""
    w = replace(window, num_history=num_history, num_future=num_future)
    span, h = num_future * w.frame_stride, w.action_horizon
    if h % num_future == 0 and span % h == 0:
        return w, ""
    fits = [num_future * d for d in range(1, w.frame_stride + 1) if w.frame_stride % d == 0]
    best = max([x for x in fits if x <= h], default=min(fits))
    return replace(w, action_horizon=best), (
        f"window: the pretrained model predicts {num_future} frames {w.frame_stride} stored frames apart "
        f"({span} actions at most); the recipe's action_horizon {h} does not fit, using {best} "
        f"(change it with --set train.data.window.action_horizon=N, N a multiple of {num_future} dividing "
        f"{span}, or train.data.window.frame_stride)")


def relative_chunks(robot, data: list[str], window, time_base: str | None = None) -> dict:
    """{"origin", "stats"} of relative chunks for ``robot``: per action dimension the
    proprioception index it is measured from, and the statistics of a[t + k] - p[t] over the
    chunk's action offsets k in every episode of the ``data`` shard sets. ``time_base`` as
    ``check_control_rate`` gives it (None: read from the sets' indexes)."""
    from pipeline.robots import relative_chunk_stats
    from uva_io.shardset import iter_tar_samples, load_index

    origin = robot.relative_origin()
    if all(o < 0 for o in origin):
        raise ValueError(f"relative_actions: robot '{robot.name}' relates no action to its proprioception "
                         f"(add relative_to: {{action name: proprio name}} to configs/robots/{robot.name}.yaml)")
    # the chunk's rows: consecutive control rows, or (shard sets that stored actions at the latent
    # rate) spread over the future frames
    if time_base is None:
        time_base = check_control_rate(robot, {(d, ep.get("control_hz")) for d in data
                                               for ep in load_index(d).get("episodes", {}).values()
                                               if ep.get("robot") == robot.name and ep.get("has_actions")})
    old = time_base == "latent_spread"
    step = window.num_future * window.frame_stride // window.action_horizon if old else 1
    offsets = [step * k for k in range(window.action_horizon)]

    def episodes():
        for d in data:
            for shard in load_index(d)["shards"]:
                for s in iter_tar_samples(storage.join(d, shard["name"]), members=("actions.npy", "proprio.npy",
                                                                                    "meta.json")):
                    if s.get("meta.json", {}).get("robot") != robot.name or "actions.npy" not in s:
                        continue
                    if "proprio.npy" not in s:
                        raise ValueError(f"relative_actions: episode {s['__key__']} of --data {d} has no "
                                         f"proprioception to measure its actions from")
                    yield s["actions.npy"], s["proprio.npy"]

    return {"origin": origin, "stats": relative_chunk_stats(episodes(), origin, offsets)}


def plan(cfg: FinetuneConfig, robot_name: str, pretrained: str, data: list[str],
         eval_data: list[str] | None = None) -> tuple[list[TrainConfig], dict]:
    """The training config of every stage, after checking robot, shards and checkpoint."""
    from pipeline.adapt import TRAINING_FIELDS, model_overrides, size_name
    from pipeline.robots import check_proprio, check_stats, load_robot
    from uva_io.shardset import load_index

    robot = load_robot(robot_name)
    if not data:
        raise ValueError("--data: give at least one latent shard set of the target robot")
    stats, proprio, identities, stored, rates = None, None, set(), set(), set()
    use_proprio = cfg.use_proprio and bool(robot.proprio_names)
    for d in data:
        if not storage.exists(storage.join(d, "index.json")):
            raise FileNotFoundError(f"--data {d}: no index.json (a shard set written by encode_latents.py)")
        entry = check_stats(robot, read_stats(d), f"--data {d}")
        if use_proprio:
            proprio = proprio or check_proprio(robot, entry, f"--data {d}")
        stats = stats or entry
        index = load_index(d)
        identities.add(index["vae"])
        stored |= {c for ep in index.get("episodes", {}).values() for c in ep.get("cameras", ())}
        rates |= {(d, ep.get("control_hz")) for ep in index.get("episodes", {}).values()
                  if ep.get("robot") == robot.name and ep.get("has_actions")}
    time_base = check_control_rate(robot, rates)
    if len(identities) > 1:
        raise ValueError(f"--data sets were encoded with different VAEs: {sorted(identities)}")
    weights, arch = resolve_pretrained(pretrained)
    base = cfg.train
    window = base.data.window
    if arch is not None:
        found = size_name(arch)
        if cfg.model_size and found != cfg.model_size:
            raise ValueError(f"--pretrained {pretrained} is a {found} model (width {arch['width']}, depth "
                             f"{arch['encoder_depth']}+{arch['decoder_depth']}), but this recipe is for {cfg.model_size}")
        # the pretrained model fixes the frame layout; the action layout comes from the robot/recipe
        window, note = fit_window(window, arch["num_history"], arch["num_future"])
        if note:
            print(f"[finetune] {note}", flush=True)
        overrides = model_overrides(arch)
        other = sorted(set(base.model.overrides) - set(TRAINING_FIELDS))
        if other:
            raise ValueError(f"train.model.overrides {other}: the architecture comes from --pretrained; a recipe "
                             f"sets only how it trains ({', '.join(TRAINING_FIELDS)})")
        overrides.update(base.model.overrides)
        overrides.setdefault("lang_dim", 0)  # the language input is the pretrained model's (an older one had none)
        if "embodiments" in overrides and robot.name not in overrides["embodiments"]:
            overrides["embodiments"] = [*overrides["embodiments"], robot.name]  # a new robot: a new row
        model = ModelSection(size=found if found != "custom" else "uva-tiny", overrides=overrides)
    else:
        model = base.model
    window.validate()
    action_dim = robot.action_dim
    if cfg.action_width == "pretrained" and arch is not None and arch.get("action_dim", 0) > action_dim:
        action_dim = int(arch["action_dim"])
        print(f"[finetune] action layers at the pretrained width {action_dim} (robot '{robot.name}': "
              f"{robot.action_dim}, the rest padded and masked)", flush=True)
    relative = relative_chunks(robot, data, window, time_base) if cfg.relative_actions else None
    if relative is not None and not use_proprio:
        raise ValueError("relative_actions: the chunks are offsets from the robot's state, so the model needs it "
                         "as input too (use_proprio: true)")
    root = Path(cfg.run_dir)
    tracking = base.tracking_uri or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    # the views are the robot's registry cameras that the data stores, in the registry's order
    # (an episode without one: an absent view); data that stores none of them: its own cameras.
    # A model with other views than the pretrained one is fitted to them (pipeline/adapt.py)
    views_of = match_cameras(robot, stored, cfg.cameras)  # the data's name of each robot camera
    views = len(views_of)
    if arch is not None:
        model.overrides["num_views"] = views
    cameras = views_of if views > 1 else None
    camera = views_of[0] if views == 1 else None
    sources = [SourceConfig(path=d, camera=camera, cameras=cameras) for d in data]
    vae_id = identities.pop()
    stages, prev = [], None
    for i, st in enumerate(cfg.stages):
        tc = replace(
            base, model=model,
            # each stage its own draws: with one seed a later stage would replay the windows, masks,
            # modes and noise of the stage before, batch for batch
            seed=base.seed + i,
            data=replace(base.data, sources=sources, window=window, action_dim=action_dim, num_views=views,
                         seed=base.data.seed + i,
                         proprio_dim=len(robot.proprio_names) if use_proprio else 0,
                         normalization=robot.normalization, norm_mask=robot.norm_mask(), vae_identity=vae_id,
                         relative_actions={robot.name: relative} if relative else {}),
            eval_sources=[SourceConfig(path=d, camera=camera, cameras=cameras) for d in eval_data]
            if eval_data else base.eval_sources,
            optim=replace(base.optim, lr=st.lr, warmup_steps=st.warmup_steps),
            total_steps=st.steps, freeze=list(st.freeze), run_dir=str(root / f"stage{i}_{st.name}"),
            tracking_uri=tracking, experiment=cfg.experiment or f"uva-finetune-{robot.name}",
            init_from=(None if cfg.from_scratch else str(weights)) if prev is None else str(prev),
            init_weights=base.init_weights)
        tc.validate()
        stages.append(tc)
        prev = Path(tc.run_dir) / "checkpoints"
    if cfg.from_scratch:
        print(f"[finetune] from scratch: the architecture of {weights}, fresh weights", flush=True)
    info = {"robot": robot, "stats": stats, "proprio_stats": proprio, "arch": arch, "time_base": time_base,
            "weights": "none (from scratch)" if cfg.from_scratch else str(weights)}
    return stages, info


def run(argv: list[str] | None = None) -> dict:
    """Parse, fine-tune every stage, export; returns {'preempted', 'stages', 'export'}."""
    from pipeline.adapt import load_adapted
    from pipeline.components.checkpoint import RunCheckpoints
    from pipeline.weights import load_weights
    from pipeline.components.distributed import dist_env, leave_process_group
    from pipeline.train import train

    p = argparse.ArgumentParser(prog="uva-finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--robot", required=True, help="a name in configs/robots/ or a robot YAML path")
    p.add_argument("--pretrained", required=True, help="checkpoints folder, step_N folder, bundle or .safetensors")
    p.add_argument("--data", nargs="+", required=True, help="latent shard sets of the target robot")
    p.add_argument("--eval-data", nargs="*", default=None, help="held-out shard sets for in-training evaluation")
    p.add_argument("--config", default="configs/finetune/default.yaml",
                   help="fine-tune recipe (a path, or one under configs/: finetune/full.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--vae", default=None, help="VAE bundle for the export (default: the one the shards name)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train --pretrained's architecture from fresh weights (the control of a pretraining "
                        "benefit measurement)")
    args = p.parse_args(argv)
    try:
        cfg = load_recipe(args.config, args.set)
        if args.run_dir:
            cfg = replace(cfg, run_dir=args.run_dir)
        if args.from_scratch:
            cfg = replace(cfg, from_scratch=True)
        stages, info = plan(cfg, args.robot, args.pretrained, args.data, args.eval_data)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    rank = dist_env().rank
    results = []
    for i, (st, tc) in enumerate(zip(cfg.stages, stages)):
        done = RunCheckpoints(Path(tc.run_dir) / "checkpoints").latest_step()
        if done is not None and done >= tc.total_steps:
            if rank == 0:
                print(f"[finetune] stage '{st.name}' already complete (step {done})", flush=True)
            continue
        if rank == 0:
            print(f"[finetune] stage '{st.name}': {st.steps} steps at lr {st.lr:g}"
                  + (f", frozen {st.freeze}" if st.freeze else "")
                  + (f", the action head alone on cached conditions, batch {st.batch_size}"
                     if st.kind == "action_head" else ""), flush=True)
        try:
            # the first stage adapts the pretrained weights to the robot; later ones continue exactly
            load = load_adapted if i == 0 else load_weights
            if st.kind == "action_head":
                from pipeline.head_fit import run_stage

                res = {**run_stage(tc, st.batch_size, load), "preempted": False}
            else:
                res = train(tc, load=load)
        except (ValueError, FileNotFoundError) as err:  # e.g. weights of another size or layout
            print(f"error: stage '{st.name}': {err}", file=sys.stderr)
            sys.exit(2)
        results.append({"stage": st.name, "step": res["step"], "run_id": res["run_id"],
                        "final_loss": res["losses"][-1] if res["losses"] else None})
        if res["preempted"]:
            return {"preempted": True, "stages": results, "export": None}
    export = Path(cfg.run_dir) / "export"
    if rank == 0:
        export = do_export(cfg, stages[-1], info, args.vae)
        print(f"[finetune] exported policy bundle -> {export}", flush=True)
    leave_process_group()
    return {"preempted": False, "stages": results, "export": str(export)}


def do_export(cfg: FinetuneConfig, last: TrainConfig, info: dict, vae: str | None) -> Path:
    from pipeline.components.checkpoint import export_weights
    from pipeline.export import export_bundle
    from uva_io.assets import find_artifact
    from uva_io.shardset import load_index

    step_dir, weights, arch = export_weights(Path(last.run_dir) / "checkpoints")
    index = load_index(last.data.sources[0].path)
    named = vae or index.get("config", {}).get("vae")
    try:  # the shipped default VAE's relative path resolves from any working directory
        vae_path = find_artifact(named)
    except (ValueError, TypeError):
        raise FileNotFoundError(f"export: the VAE of the shards ({named!r}) is not here; pass --vae") from None
    w = last.data.window
    window = {"num_history": w.num_history, "num_future": w.num_future, "frame_stride": w.frame_stride,
              "action_horizon": w.action_horizon}
    # the bundle speaks the robot's camera names (the data's, mapped back)
    robot_name = {data: cam for cam, data in cfg.cameras.items()}
    cam = robot_name.get(last.data.sources[0].camera, last.data.sources[0].camera or "main")
    cameras = [robot_name.get(c, c) for c in last.data.sources[0].cameras or []]
    return export_bundle(Path(cfg.run_dir) / "export", weights, arch, info["robot"], info["stats"], window,
                         vae_path, index["vae"], cfg.export_sampling_steps, cam,
                         source={"checkpoint": str(step_dir), "pretrained": info["weights"]},
                         proprio_stats=info["proprio_stats"], vae_precision=index.get("vae_precision", "fp32"),
                         relative=last.data.relative_actions.get(info["robot"].name),
                         time_base=info.get("time_base", "control_rows"),
                         cameras=list(cameras) + [f"absent{i}" for i in range(len(cameras), last.data.num_views)]
                         if cameras else None)


def check_control_rate(robot, rates: set[tuple[str, float | None]]) -> str:
    """The time base of the robot's episodes in ``rates`` ({(data set, control_hz)}): "control_rows"
    (shard sets that store actions at the source's rate, which must be the rate the robot's YAML
    says), or "latent_spread" (sets written before: actions at the latent rate). A rate that is
    not the robot's, or old and new sets together, is a ValueError naming them."""
    old = sorted({d for d, hz in rates if hz is None})
    new = {(d, float(hz)) for d, hz in rates if hz is not None}
    if old and new:
        raise ValueError(f"--data {old} store the robot's actions at the latent rate (written before actions kept "
                         f"their control rate) and {sorted({d for d, _ in new})} at the control rate: re-encode "
                         f"{old} with this version of uva-encode")
    bad = sorted((d, hz) for d, hz in new if abs(hz - robot.control_hz) > 1e-3 * robot.control_hz)
    if bad:
        d, hz = bad[0]
        raise ValueError(f"robot '{robot.name}' runs at control_hz {robot.control_hz:g} (its YAML), but --data {d} "
                         f"holds its episodes at {hz:g} Hz: fix control_hz in the robot's YAML, or the source "
                         f"fps the data was encoded with")
    return "latent_spread" if old else "control_rows"


def match_cameras(robot, stored: set[str], mapping: dict[str, str]) -> list[str]:
    """The data's camera for each of the robot's cameras, in the robot's order. A robot camera the
    data lacks, or a data camera the robot does not name, is a ValueError that shows the mapping
    to set; an index that records no cameras takes the robot's names."""
    unknown = sorted(set(mapping) - set(robot.cameras))
    if unknown:
        raise ValueError(f"cameras: {unknown} are not cameras of robot '{robot.name}' ({robot.cameras})")
    own = [c for c in robot.cameras if mapping.get(c, c) is not None]  # null: not in this data
    if not own:
        raise ValueError(f"cameras: every camera of robot '{robot.name}' is mapped to null")
    want = [mapping.get(c, c) for c in own]
    if not stored:
        return want
    missing = [c for c, d in zip(own, want) if d not in stored]
    extra = sorted(stored - set(want))
    if missing or extra:
        pairs = {**dict(zip(missing, extra)), **{c: "null" for c in missing[len(extra):]}}
        mapping_text = "{" + ", ".join(f"{a}: {b}" for a, b in pairs.items()) + "}"
        parts = ([f"the robot's {missing} are not in the data"] if missing else []) + \
                ([f"the data's {extra} are not the robot's"] if extra else [])
        raise ValueError(f"--data stores cameras {sorted(stored)}, robot '{robot.name}' has {robot.cameras}: "
                         f"{'; '.join(parts)}. Map them in the recipe (cameras: {mapping_text}) or with "
                         f"--set 'cameras={mapping_text}', or name them in the robot's YAML")
    return want


def main(argv: list[str] | None = None) -> None:
    from pipeline.components.distributed import PREEMPTED_EXIT

    sys.exit(PREEMPTED_EXIT if run(argv)["preempted"] else 0)


if __name__ == "__main__":
    main()
