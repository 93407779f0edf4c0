"""benchmarks/bench_pretraining_value.py: its seed rules and how it reads a fine-tune's curve."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_demo_seeds_that_meet_the_test_seeds_or_the_task_video_are_refused(tmp_path):
    for offset, clash in [(100000, "test seeds"), (99000, "held-out demos"), (200000, "task video")]:
        proc = subprocess.run([sys.executable, "benchmarks/bench_pretraining_value.py", "--out", str(tmp_path),
                               "--demos", "25", "--demo-seed-offset", str(offset)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "overlap" in proc.stderr and clash in proc.stderr, (offset, proc.stderr)
    assert not any(tmp_path.iterdir())  # refused before anything was made


def test_the_curve_counts_steps_over_the_stages(tmp_path):
    from bench_pretraining_value import eval_curve

    log = tmp_path / "finetune.log"
    log.write_text("[finetune] stage 'heads': 60 steps at lr 0.001\n"
                   "[eval] step 25: val/action_mse 2.5000, val/latent_mse 1.0\n"
                   "[eval] step 60: val/action_mse 1.5000, val/latent_mse 1.0\n"
                   "[finetune] stage 'all': 240 steps at lr 0.0005\n"
                   "[eval] step 25: val/action_mse 0.5000, val/latent_mse 1.0\n"
                   "[eval] step 240: val/action_mse 0.2500\n")
    assert eval_curve(log) == [(25, 2.5), (60, 1.5), (85, 0.5), (300, 0.25)]
