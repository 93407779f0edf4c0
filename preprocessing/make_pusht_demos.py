"""PushT expert demonstrations in the manifest format (gym-pusht simulator + planning expert).

    uva-make-pusht-demos --num-episodes 200 --output data/pusht_demos --workers 2

Episode i starts from the legacy start state of seed ``--seed + i`` (the evaluation's test
seeds are 100000..100049; keep demo seeds away from them) and is driven by the planning expert
(uva_sim/pusht/expert.py) under the evaluation protocol's rules (chunks of 8 actions, at most
``--max-steps`` steps, the episode ends at coverage > 0.95). Each kept episode is an mp4 of the
agent's rgb view (one frame per action, taken before the action), a (T, 2) float32 actions file
of target positions in pixels at 10 Hz, a (T, 2) agent-position file, and a manifest line with
robot ``pusht``, the seed and the final coverage. Episodes whose final coverage is <= 0.95 are
dropped and counted. Every finished episode leaves a small JSON record, so a killed job rerun
with the same arguments redoes only the missing episodes; the manifest is rewritten at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from uva_io.files import atomic_write, npy_bytes
from uva_io.video import write_mp4
from uva_sim.pusht.env import INSTRUCTION, SUCCESS_COVERAGE
from uva_sim.pusht.runner import TEST_SEEDS, run_parallel

ROBOT = "pusht"
FPS = 10


def save_episode(out: Path, ep: str, res, codec: str = "lossless") -> dict:
    """Write one episode's files, then its record (last, atomically: the record marks it done).
    ``codec`` lossless: RGB h264 at crf 0, the frames exactly as rendered (what the policy sees
    in evaluation); h264: yuv420 at crf 18 (about 6x smaller; up to ~100 of 255 off at edges)."""
    record = {"episode_id": ep, "seed": res.seed, "steps": res.steps, "coverage": round(res.final_coverage, 5),
              "max_coverage": round(res.max_coverage, 5), "kept": bool(res.final_coverage > SUCCESS_COVERAGE)}
    if record["kept"]:
        write_mp4(out / f"{ep}.mp4", res.frames, FPS, *(("libx264rgb", 0) if codec == "lossless" else ("libx264", 18)))
        atomic_write(out / f"{ep}_actions.npy", npy_bytes(res.actions.astype(np.float32)))
        atomic_write(out / f"{ep}_agent_pos.npy", npy_bytes(res.agent_pos.astype(np.float32)))
    atomic_write(out / f"{ep}.json", json.dumps(record).encode())
    return record


def write_manifest(out: Path, records: list[dict]) -> Path:
    lines = [json.dumps({"episode_id": r["episode_id"], "video": f"{r['episode_id']}.mp4",
                         "actions": f"{r['episode_id']}_actions.npy", "proprio": f"{r['episode_id']}_agent_pos.npy",
                         "robot": ROBOT, "fps": FPS, "instruction": INSTRUCTION,
                         "seed": r["seed"], "coverage": r["coverage"], "steps": r["steps"]})
             for r in records if r["kept"]]
    path = out / "manifest.jsonl"
    atomic_write(path, "".join(line + "\n" for line in lines).encode())
    return path


def run(argv: list[str] | None = None) -> dict:
    """Parse, make the missing demos, rewrite the manifest; returns the summary."""
    p = argparse.ArgumentParser(prog="uva-make-pusht-demos", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True)
    p.add_argument("--num-episodes", type=int, default=50, help="episodes attempted (failed ones are dropped)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses start-state seed SEED + i")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--size", type=int, default=96, help="rendered frame size (square)")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--codec", default="lossless", choices=("lossless", "h264"),
                   help="demo videos: lossless RGB (training sees the frames evaluation renders) or h264 crf 18")
    args = p.parse_args(argv)
    if args.num_episodes < 1 or args.workers < 1 or args.size < 8 or args.max_steps < 1:
        p.error("--num-episodes, --workers, --max-steps must be >= 1 and --size >= 8")
    seeds = [args.seed + i for i in range(args.num_episodes)]
    clash = sorted(set(seeds) & set(TEST_SEEDS))
    if clash:
        p.error(f"--seed {args.seed} with --num-episodes {args.num_episodes} uses evaluation test seeds "
                f"{clash[0]}..{clash[-1]}; pick demo seeds outside 100000..100049")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    names = {s: f"ep{i:05d}" for i, s in enumerate(seeds)}
    records = {}
    for s, ep in names.items():  # finished by an earlier run of this job
        rec_path = out / f"{ep}.json"
        if rec_path.is_file():
            rec = json.loads(rec_path.read_text())
            if rec.get("seed") == s:
                records[s] = rec
    todo = [s for s in seeds if s not in records]
    if records:
        print(f"[pusht-demos] resuming: {len(records)} episodes already done, {len(todo)} to go")
    t0 = time.time()
    for res in run_parallel("expert", todo, workers=min(args.workers, max(1, len(todo))),
                            max_steps=args.max_steps, record=True, obs_size=args.size):
        rec = save_episode(out, names[res.seed], res, args.codec)
        records[res.seed] = rec
        print(f"[pusht-demos] {rec['episode_id']} seed {res.seed}: coverage {rec['coverage']:.3f} in "
              f"{res.steps} steps {'kept' if rec['kept'] else 'DROPPED (coverage <= 0.95)'}", flush=True)
    minutes = (time.time() - t0) / 60
    ordered = [records[s] for s in seeds]
    manifest = write_manifest(out, ordered)
    kept_now = sum(records[s]["kept"] for s in todo)
    summary = {"attempted": len(seeds), "kept": sum(r["kept"] for r in ordered),
               "dropped": sum(not r["kept"] for r in ordered), "minutes_this_run": round(minutes, 3),
               "demos_per_minute_this_run": round(kept_now / minutes, 2) if todo and minutes > 0 else None,
               "workers": args.workers, "manifest": str(manifest)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[pusht-demos] kept {summary['kept']} of {summary['attempted']} (dropped {summary['dropped']}); "
          f"{summary['demos_per_minute_this_run']} demos/min with {args.workers} workers -> {manifest}")
    return summary


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
