"""Encode robot and human video into sharded latent WebDataset tars, spread over Ray.

    uva-encode --manifest demos/manifest.jsonl \
        --video-folder human_videos/ --output data/latents [--config configs/preprocess/default.yaml] \
        [--set episodes_per_shard=16] [--ray-address HOST:6379] [--strict]
    uva-encode --zarr data/pusht_cchi_v7_replay.zarr --source-fps 10 --robot pusht --output ...
    uva-encode --hdf5 libero_10/KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5 --source-fps 20 --robot franka ...
    uva-encode --rlds gs://gresearch/robotics/bridge/0.1.0 --rlds tensorflow_datasets/droid/1.0.0 --output ...

(``python preprocessing/encode_latents.py ...`` runs the same job from a checkout with the
project installed.)
Decoding runs in Ray CPU tasks, the VAE in a pool of actors (GPU when the cluster has one).
Episodes are assigned to shards in input order, so a rerun of the same command after a crash
or ``kill -9`` writes only the missing shards. At the end it writes index.json, stats.json and
errors.jsonl beside the shards and prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from preprocessing.arrays import is_array_ref, read_hdf5, read_zarr_replay
from preprocessing.encode import EncodeConfig, FrameEncoder, decode_episode, pack_sample
from preprocessing.rlds import read_rlds
from preprocessing.sources import (
    Episode,
    read_lerobot,
    read_manifest,
    read_video_folder,
    sanitize_key,
)
from uva_io import storage
from uva_io.config import load_config, to_dict
from uva_io.shardset import INDEX_FORMAT, compute_action_stats, shard_name, write_shard
from uva_io.video import probe_duration

log = logging.getLogger("encode_latents")


STORAGE_ENV = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_", "FSSPEC_")


def ray_token_available() -> bool:
    """True when a Ray auth token is at hand: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).is_file() and Path(path).stat().st_size > 0
    except OSError:
        return False


def match_ray_auth(address: str | None) -> None:
    """Use the same auth mode as ``ray start`` when joining a cluster by address.

    Ray >= 2.59 ``ray start --head`` turns token auth on whenever a token exists (a local
    ``ray.init()`` leaves one in ~/.ray/auth_token), but a client given an explicit address
    never does, so the two disagree and the client fails with InvalidAuthToken. An explicit
    RAY_AUTH_MODE is always respected.
    """
    if address and address != "auto" and "RAY_AUTH_MODE" not in os.environ and ray_token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uva-encode", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", action="append", default=[], help="JSONL manifest (repeatable)")
    p.add_argument("--lerobot", action="append", default=[], help="LeRobot v3.0 dataset folder or URL prefix (repeatable)")
    p.add_argument("--video-folder", action="append", default=[], help="folder or URL prefix of action-free videos (repeatable)")
    p.add_argument("--zarr", action="append", default=[],
                   help="Diffusion Policy / UMI zarr replay buffer: a folder or .zarr.zip (repeatable)")
    p.add_argument("--hdf5", action="append", default=[], help="robomimic / LIBERO HDF5 file (repeatable)")
    p.add_argument("--rlds", action="append", default=[],
                   help="RLDS / Open X-Embodiment dataset version folder or URL prefix, <name>/<version>/ (repeatable)")
    p.add_argument("--split", default=None, help="comma-separated splits of --rlds inputs (default: every split)")
    p.add_argument("--rlds-cameras", default=None,
                   help="cameras of --rlds inputs as name=feature,... (steps/observation/<feature>; default: "
                        "configs/oxe.yaml, else every image feature)")
    p.add_argument("--source-fps", type=float, default=None,
                   help="frame rate of --zarr/--hdf5/--rlds episodes (the formats do not store it; "
                        "configs/oxe.yaml has it for the OXE datasets)")
    p.add_argument("--image-keys", default=None,
                   help="comma-separated image arrays of --zarr/--hdf5 inputs (default: every uint8 image array)")
    p.add_argument("--proprio-keys", default=None,
                   help="comma-separated state arrays of --zarr/--hdf5 inputs, concatenated (default: data/state; "
                        "robomimic eef pos+quat+gripper; LIBERO ee+gripper states)")
    p.add_argument("--instruction", default=None,
                   help="instruction of --zarr/--hdf5 episodes that do not store one")
    p.add_argument("--robot", default=None, help="robot name for --lerobot/--video-folder/--zarr/--hdf5 inputs")
    p.add_argument("--output", required=True, help="output folder or URL prefix (s3://bucket/prefix) for the shard set")
    p.add_argument("--config", default=None, help="YAML preprocessing config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join: HOST:PORT, or auto (the cluster `ray start` left on this "
                        "machine); default: a private local instance, never a cluster already running")
    p.add_argument("--strict", action="store_true", help="exit nonzero if any input was skipped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not (args.manifest or args.lerobot or args.video_folder or args.zarr or args.hdf5 or args.rlds):
        p.error("give at least one input: --manifest, --lerobot, --video-folder, --zarr, --hdf5 or --rlds")
    return args


def cut_clips(ep: Episode, seconds: float) -> list[Episode]:
    """An action-free episode as consecutive clips of ``seconds`` (ids ``<id>_c00000``, ...; the
    last one may be shorter); episodes with actions or proprioception stay whole. A video whose
    duration cannot be read stays whole too (decoding reports the problem)."""
    if ep.actions is not None or ep.proprio is not None or len(ep.videos) != 1 or \
            any(is_array_ref(v) for v in ep.videos.values()):
        return [ep]
    (cam, path), = ep.videos.items()
    start, end = ep.segments.get(cam, (0.0, None))
    duration = probe_duration(path)
    if duration is None:
        return [ep]
    end = duration if end is None else min(end, duration)
    count = max(1, math.ceil((end - start) / seconds - 1e-9))
    return [replace(ep, episode_id=f"{ep.episode_id}_c{k:05d}",
                    segments={cam: (start + k * seconds, min(end, start + (k + 1) * seconds))})
            for k in range(count)]


def gather_episodes(args: argparse.Namespace, clip_seconds: float | None = None) -> tuple[list[Episode], list[dict]]:
    episodes, errors = [], []
    for path in args.manifest:
        if not storage.exists(path):
            raise ValueError(f"--manifest {path}: file does not exist")
        e, err = read_manifest(path, default_robot=args.robot or "unknown")
        episodes += e
        errors += err
    for path in args.lerobot:
        e, err = read_lerobot(path, robot=args.robot)
        episodes += e
        errors += err
    for path in args.video_folder:
        if not storage.isdir(path):
            raise ValueError(f"--video-folder {path}: not a folder (or an empty URL prefix)")
        e, err = read_video_folder(path, robot=args.robot or "human")
        episodes += e
        errors += err
    keys = lambda text: [k.strip() for k in text.split(",") if k.strip()] if text is not None else None  # noqa: E731
    for flag, paths, reader in (("--zarr", args.zarr, read_zarr_replay), ("--hdf5", args.hdf5, read_hdf5)):
        for path in paths:
            robot = args.robot or sanitize_key(Path(path.rstrip("/")).name.split(".")[0])
            e, err = reader(path, robot, args.source_fps, image_keys=keys(args.image_keys),
                            proprio_keys=keys(args.proprio_keys), instruction=args.instruction)
            episodes += e
            errors += err
    for path in args.rlds:
        cams = None
        if args.rlds_cameras:
            pairs = [c.split("=", 1) for c in args.rlds_cameras.split(",") if c.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError(f"--rlds-cameras {args.rlds_cameras!r}: expected name=feature,...")
            cams = {sanitize_key(a.strip()): b.strip() for a, b in pairs}
        e, err = read_rlds(path, robot=args.robot, source_fps=args.source_fps, splits=keys(args.split),
                           cameras=cams, proprio_keys=keys(args.proprio_keys))
        episodes += e
        errors += err
    if clip_seconds:
        episodes = [clip for ep in episodes for clip in cut_clips(ep, clip_seconds)]
    seen = set()
    unique = []
    for ep in episodes:  # ids must be unique across inputs too
        if ep.episode_id in seen:
            errors.append({"input": ep.source, "episode_id": ep.episode_id,
                           "reason": f"duplicate episode id '{ep.episode_id}' across inputs"})
            continue
        seen.add(ep.episode_id)
        unique.append(ep)
    return unique, errors


def check_run_identity(out: str, identity: dict) -> None:
    """Refuse to mix a resumed run with a different config, VAE or episode list."""
    path = storage.join(out, "run.json")
    if storage.exists(path):
        previous = json.loads(storage.read_text(path))
        for key in ("config", "vae", "episodes_sha", "text_encoder"):
            if previous.get(key) != identity.get(key):
                raise ValueError(
                    f"{out} holds shards from a run with a different {key}; use a new --output "
                    f"or delete the folder")
    else:
        storage.write_bytes(path, json.dumps(identity, indent=1))


def run(args: argparse.Namespace) -> int:
    match_ray_auth(args.ray_address)  # before ray is imported: its config reads the env once
    import ray

    from uva.vae import vae_identity
    from uva_io.vae_bundle import load_vae, resolve_precision

    cfg = load_config(EncodeConfig, args.config, args.set)
    vae = load_vae(cfg.vae, preset=cfg.vae_preset)
    vae_id = vae_identity(vae)
    episodes, errors = gather_episodes(args, cfg.clip_seconds)
    out = args.output.rstrip("/") if storage.is_remote(args.output) else str(Path(args.output))
    storage.makedirs(out)
    ep_sha = hashlib.sha256(json.dumps([e.to_json() for e in episodes]).encode()).hexdigest()[:16]
    lang, text_encoder = embed_instructions(episodes, cfg.text_encoder, cfg.text_tokens)
    identity = {"config": {k: getattr(cfg, k) for k in cfg.OUTPUT_KEYS}, "vae": vae_id, "vae_config": to_dict(vae.config),
                "episodes_sha": ep_sha, "text_encoder": text_encoder}
    check_run_identity(out, identity)

    k = cfg.episodes_per_shard
    shards = [episodes[i : i + k] for i in range(0, len(episodes), k)]
    present = storage.listdir(out)  # one listing, not a request per shard
    todo = [i for i in range(len(shards)) if f"{shard_name(cfg.shard_prefix, i)}.tar" not in present]
    print(f"[encode] {len(episodes)} episodes in {len(shards)} shards; {len(todo)} to write "
          f"({len(shards) - len(todo)} already complete); VAE {vae_id}", flush=True)

    frames_done, started = 0, time.time()
    if todo:
        # object-storage settings of this shell reach the workers too (endpoint, credentials, region)
        forward = {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV)}
        # no --ray-address: a private local instance. Ray's own default (no address) would join the
        # cluster that `ray start` last left on this machine, someone else's on a shared node.
        address = args.ray_address or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True, logging_level=logging.WARNING,
                 runtime_env={"env_vars": forward} if forward else None)
        where = {"local": "a private local instance", "auto": "the cluster on this machine (--ray-address auto)"}
        print(f"[encode] Ray: {where.get(address, f'the cluster at {address}')}, "
              f"GCS {ray.get_runtime_context().gcs_address}", flush=True)
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        # a resumed run keeps the precision its shards were written with
        pending_shards = set(todo)
        written = written_precision(out, [i for i in range(len(shards)) if i not in pending_shards], cfg)
        if written and cfg.vae_precision not in ("auto", written):
            raise ValueError(f"{out} holds shards encoded in {written}, config asks vae_precision="
                             f"{cfg.vae_precision}; use a new --output or delete the folder")
        precision = written or resolve_precision(cfg.vae_precision, use_gpu)
        print(f"[encode] VAE actors on {'GPU' if use_gpu else 'CPU'}, {precision}", flush=True)
        decode_task = ray.remote(num_cpus=1)(decode_episode)
        actor_cls = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1)(FrameEncoder)
        actors = [actor_cls.remote(cfg.vae, cfg.vae_preset, cfg.batch_size, cfg.encoder_threads, precision)
                  for _ in range(cfg.num_encoders)]
        cfg_ref = ray.put(cfg)
        # one actor call per shard: its episodes' frames share the VAE batches (a GPU stays busy
        # on short episodes), and the grouping is the same on every run, so a resumed job writes
        # the same bytes
        pending: dict = {}  # ObjectRef -> (shard, [(slot, episode)])
        results: dict[int, dict[int, dict]] = {s: {} for s in todo}
        progress = None
        if not args.no_progress:
            from tqdm import tqdm
            progress = tqdm(total=sum(len(shards[s]) for s in todo), unit="ep", desc="encode", file=sys.stderr)
        queue, in_flight, calls = list(todo), 0, 0
        while queue or pending:
            while queue and (not pending or in_flight + len(shards[queue[0]]) <= cfg.max_in_flight):
                s = queue.pop(0)
                decoded = [decode_task.remote(ep, cfg_ref) for ep in shards[s]]
                ref = actors[calls % len(actors)].encode_episodes.remote(*decoded)
                pending[ref] = (s, list(enumerate(shards[s])))
                in_flight += len(shards[s])
                calls += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            s, items = pending.pop(ready[0])
            out_list = ray.get(ready[0])
            out_list = out_list if isinstance(out_list, list) else [out_list]
            in_flight -= len(items)
            for (j, ep), res in zip(items, out_list):
                if res.get("stream"):  # longer than chunk_frames: an actor decodes and encodes it in chunks
                    pending[actors[(s + j) % len(actors)].encode_streaming.remote(ep, cfg_ref)] = (s, [(j, ep)])
                    in_flight += 1
                    continue
                results[s][j] = res
                if progress:
                    progress.update(1)
            if len(results[s]) == len(shards[s]):
                frames_done += write_complete_shard(out, cfg, s, shards[s], results.pop(s), vae_id, precision, lang)
        if progress:
            progress.close()
    return finalize(out, cfg, shards, errors, vae_id, identity, frames_done, time.time() - started, args.strict)


def written_precision(out: str, done: list[int], cfg: EncodeConfig) -> str | None:
    """The VAE precision of the complete shards ``done`` (None when there are none)."""
    if not done:
        return None
    sidecar = storage.join(out, f"{shard_name(cfg.shard_prefix, done[0])}.json")  # a complete tar has one
    return json.loads(storage.read_text(sidecar)).get("vae_precision", "fp32")


def embed_instructions(episodes: list[Episode], spec: str, max_tokens: int) -> tuple[dict[str, np.ndarray], dict | None]:
    """Each distinct instruction embedded once by the text encoder of ``spec`` -> ({instruction:
    (max_tokens, dim) token vectors}, the encoder's record for index.json); no instructions:
    ({}, None), nothing loaded."""
    from uva_io.text import describe, load_text_encoder

    texts = sorted({ep.instruction for ep in episodes if ep.instruction})
    if not texts:
        return {}, None
    encoder = load_text_encoder(spec, max_tokens)
    vectors = encoder.encode(texts)
    print(f"[encode] {len(texts)} distinct instruction(s) embedded by {encoder.spec} ({encoder.max_tokens} tokens x "
          f"{encoder.dim})", flush=True)
    return dict(zip(texts, vectors)), describe(encoder)


def write_complete_shard(out: str, cfg: EncodeConfig, idx: int, eps: list[Episode],
                         results: dict[int, dict], vae_id: str, precision: str, lang: dict | None = None) -> int:
    samples, records, skipped, warnings, frames = [], {}, [], [], 0
    for j, ep in enumerate(eps):
        res = results[j]
        if "error" in res:
            skipped.append({"input": ep.source, "episode_id": ep.episode_id, "reason": res["error"]})
            log.warning("skipped %s: %s", ep.episode_id, res["error"])
            continue
        sample, record = pack_sample(ep, res, cfg, vae_id, (lang or {}).get(ep.instruction or ""))
        for cam, n in (res.get("truncated") or {}).items():
            reason = (f"truncated: camera '{cam}' decodes {n['decoded']} of the {n['declared']} frames its "
                      f"container declares; encoded as far as it decodes")
            warnings.append({"input": ep.source, "episode_id": ep.episode_id, "reason": reason})
            log.warning("%s: %s", ep.episode_id, reason)
        samples.append(sample)
        records[ep.episode_id] = record
        frames += record["num_frames"]
    sidecar = {"shard": shard_name(cfg.shard_prefix, idx), "episodes": records, "skipped": skipped,
               "warnings": warnings, "num_frames": frames, "vae": vae_id, "vae_precision": precision}
    write_shard(out, cfg.shard_prefix, idx, samples, sidecar)
    return frames


def finalize(out: str, cfg: EncodeConfig, shards: list, errors: list[dict], vae_id: str,
             identity: dict, frames_done: int, seconds: float, strict: bool) -> int:
    """Index, statistics and error log over every shard (fresh and previously written)."""
    index_shards, episodes, skipped, warned = [], {}, list(errors), []
    tar_paths, precisions = [], set()
    for i in range(len(shards)):
        name = shard_name(cfg.shard_prefix, i)
        sidecar = json.loads(storage.read_text(storage.join(out, f"{name}.json")))
        precisions.add(sidecar.get("vae_precision", "fp32"))
        tar_paths.append(storage.join(out, f"{name}.tar"))
        index_shards.append({"name": f"{name}.tar", "num_episodes": len(sidecar["episodes"]),
                             "num_frames": sidecar["num_frames"]})
        for ep_id, rec in sidecar["episodes"].items():
            episodes[ep_id] = rec | {"shard": f"{name}.tar"}
        skipped += sidecar["skipped"]
        warned += sidecar.get("warnings", [])
    if len(precisions) > 1:
        raise ValueError(f"{out}: shards were encoded with VAE precisions {sorted(precisions)}; set "
                         f"vae_precision and re-encode into a new --output")
    total_frames = sum(s["num_frames"] for s in index_shards)
    stats = compute_action_stats(tar_paths)
    index = {"format": INDEX_FORMAT, "vae": vae_id, "vae_config": identity["vae_config"],
             "vae_precision": precisions.pop() if precisions else "fp32",
             "config": to_dict(cfg), "shard_prefix": cfg.shard_prefix, "shards": index_shards,
             "episodes": episodes, "num_episodes": len(episodes), "num_frames": total_frames,
             "num_skipped": len(skipped), "warnings": warned, "robots": sorted({r["robot"] for r in episodes.values()}),
             "text_encoder": identity.get("text_encoder")}
    # the index last: a reader that sees it sees the statistics and error log of the same run
    storage.write_bytes(storage.join(out, "stats.json"), json.dumps(stats, indent=1))
    storage.write_bytes(storage.join(out, "errors.jsonl"), "".join(json.dumps(e) + "\n" for e in skipped))
    storage.write_bytes(storage.join(out, "index.json"), json.dumps(index, indent=1))
    rate = frames_done / seconds if seconds > 0 and frames_done else 0.0
    print(f"[encode] done: {len(episodes)} episodes, {total_frames} frames, {len(index_shards)} shards, "
          f"{len(skipped)} skipped; this run encoded {frames_done} frames in {seconds:.1f}s "
          f"({rate:.1f} frames/s) -> {out}", flush=True)
    for e in skipped:
        print(f"[encode] skipped {e.get('episode_id', e['input'])}: {e['reason']}", flush=True)
    return 1 if strict and skipped else 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        code = run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
