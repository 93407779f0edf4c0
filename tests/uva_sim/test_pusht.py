"""PushT: legacy start states, exact state cloning, protocol arithmetic, expert demos, evaluation."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli
from uva_sim.pusht.env import (
    GOAL_POSE,
    INSTRUCTION,
    advance,
    coverage_of,
    get_state,
    legacy_start_state,
    make_env,
    pose_error,
    reward_from_coverage,
    set_state,
)
from uva_sim.pusht.runner import evaluate_policy, parse_seeds, run_episode, score_of

ROOT = Path(__file__).resolve().parents[2]


def test_legacy_start_state_of_a_known_seed():
    # np.random.RandomState(100000): randint(50,450) x2, randint(100,400) x2, randn()*2pi - pi
    np.testing.assert_allclose(legacy_start_state(100000), [235, 124, 335, 128, -0.9049274284249247], rtol=0, atol=1e-12)
    np.testing.assert_allclose(legacy_start_state(0), [222, 97, 217, 292, 3.0079994677219553], rtol=0, atol=1e-12)
    env = make_env()
    s = legacy_start_state(100000)
    env.reset(options={"reset_to_state": s})
    st = get_state(env)
    assert st.agent == pytest.approx((235.0, 124.0), abs=1e-9)
    assert st.angle == pytest.approx(s[4], abs=1e-12)
    # legacy order: position first, then the angle, which turns the T about its centre of gravity
    # (body frame (0, 45)): the body origin ends up away from the state's (x, y).
    cog = np.array([335.0, 128.0 + 45.0])
    c, si = math.cos(s[4]), math.sin(s[4])
    expected = cog - np.array([-si * 45.0, c * 45.0])
    np.testing.assert_allclose(st.block, expected, atol=1e-6)
    assert np.linalg.norm(np.array(st.block) - s[2:4]) > 10


def test_state_clone_is_exact_and_deterministic():
    env = make_env()
    env.reset(options={"reset_to_state": legacy_start_state(100003)})
    rng = np.random.default_rng(0)
    for a in rng.uniform(100, 400, size=(15, 2)):  # push things around: contacts, velocities
        env.step(a)
    saved = get_state(env)
    actions = rng.uniform(100, 400, size=(20, 2))
    for a in actions:
        advance(env, a)
    first = get_state(env)
    set_state(env, saved)
    assert get_state(env) == saved  # angle before position: the pose comes back bit for bit
    for a in actions:
        advance(env, a)
    after = get_state(env)
    np.testing.assert_allclose(after.block, first.block, atol=1e-6)
    assert after.angle == pytest.approx(first.angle, abs=1e-7)
    # advance() is env.step without the observation: same physics
    set_state(env, saved)
    for a in actions[:5]:
        env.step(a)
    via_step = get_state(env)
    set_state(env, saved)
    for a in actions[:5]:
        advance(env, a)
    np.testing.assert_allclose(get_state(env).block, via_step.block, atol=1e-6)


def test_reward_score_and_coverage_arithmetic():
    assert reward_from_coverage(0.0) == 0.0
    assert reward_from_coverage(0.475) == pytest.approx(0.5)
    assert reward_from_coverage(0.95) == 1.0
    assert reward_from_coverage(0.99) == 1.0
    assert reward_from_coverage(-0.1) == 0.0
    assert score_of([1.0, 0.5, 0.0, 0.25]) == pytest.approx(0.4375)
    assert math.isnan(score_of([]))
    assert coverage_of(GOAL_POSE[:2], GOAL_POSE[2]) == pytest.approx(1.0)
    assert pose_error(GOAL_POSE[:2], GOAL_POSE[2]) == pytest.approx(0.0, abs=1e-9)
    assert coverage_of((256 + 200, 256), GOAL_POSE[2]) == 0.0
    env = make_env()  # our coverage is the environment's
    env.reset(options={"reset_to_state": legacy_start_state(100001)})
    st = get_state(env)
    assert coverage_of(st.block, st.angle) == pytest.approx(env._get_coverage(), abs=1e-9)
    assert parse_seeds("100000:100003") == [100000, 100001, 100002]
    assert parse_seeds("5,7") == [5, 7]
    with pytest.raises(ValueError, match="names no seed"):
        parse_seeds("3:3")


class _ScriptedPolicy:
    """Returns a fixed target forever; records how it was called."""

    num_obs = 3
    needs_state = False

    def __init__(self):
        self.calls = []

    def reset(self, seed=0):
        self.calls.clear()

    def __call__(self, obs, num_actions):
        self.calls.append({k: getattr(v, "shape", v) for k, v in obs.items()})
        return np.tile(np.array([[20.0, 20.0]]), (16, 1))


def test_runner_protocol_bookkeeping():
    env = make_env()
    pol = _ScriptedPolicy()
    res = run_episode(env, pol, 100000, max_steps=20, action_steps=8, record=True)
    # 20 steps in chunks of 8: calls at 0, 8, 16; the last chunk is cut at the step limit
    assert res.steps == 20 and len(pol.calls) == 3
    assert pol.calls[0] == {"image": (3, 96, 96, 3), "agent_pos": (3, 2), "instruction": INSTRUCTION}
    assert res.frames.shape == (20, 96, 96, 3) and res.actions.shape == (20, 2)
    assert res.max_reward == pytest.approx(reward_from_coverage(res.max_coverage))
    assert not res.success

    class Bad(_ScriptedPolicy):
        def __call__(self, obs, num_actions):
            return np.full((4, 3), np.nan)

    with pytest.raises(ValueError, match="Bad returned an action chunk of shape"):
        run_episode(env, Bad(), 100000, max_steps=8)


@pytest.mark.slow
def test_expert_demos_reach_coverage_and_encode(tmp_path):
    out = tmp_path / "demos"
    cmd = [cli("uva-make-pusht-demos"), "--output", str(out),
           "--num-episodes", "2", "--workers", "2", "--seed", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in lines] == [3, 4]
    for r in lines:
        assert r["robot"] == "pusht" and r["fps"] == 10 and r["coverage"] > 0.95
        acts = np.load(out / r["actions"])
        assert acts.shape == (r["steps"], 2) and acts.dtype == np.float32
        assert (acts >= 0).all() and (acts <= 512).all()
    # the stored frames are the rendered ones, bit for bit (lossless): training sees what evaluation sees
    from uva_io.video import read_clip
    from uva_sim.pusht.runner import run_parallel

    rendered = next(iter(run_parallel("expert", [3], workers=1, max_steps=300, record=True, obs_size=96))).frames
    np.testing.assert_array_equal(read_clip(str(out / lines[0]["video"]), None, 96).frames, rendered)
    # rerun: nothing to redo, the same manifest
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert "2 episodes already done, 0 to go" in proc.stdout
    # demo seeds may not overlap the test seeds
    bad = subprocess.run(cmd[:-1] + ["99999"], capture_output=True, text=True)
    assert bad.returncode != 0 and "evaluation test seeds" in bad.stderr
    # the manifest goes through encode_latents unchanged (local Ray, shipped VAE)
    lat = tmp_path / "latents"
    proc = subprocess.run([cli("uva-encode"), "--config",
                           str(ROOT / "configs" / "preprocess" / "default.yaml"), "--manifest",
                           str(out / "manifest.jsonl"), "--output", str(lat)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((lat / "index.json").read_text())
    stats = json.loads((lat / "stats.json").read_text())
    assert stats["pusht"]["dim"] == 2 and stats["pusht"]["count"] == sum(r["steps"] for r in lines)
    assert index and (lat / "errors.jsonl").read_text().strip() == ""


@pytest.mark.slow
def test_random_policy_scores_far_below_the_expert(tmp_path):
    seeds = [100000, 100002, 100004]
    expert = evaluate_policy("expert", seeds, workers=1, video_dir=tmp_path / "videos", log=None)
    random = evaluate_policy("random", seeds, workers=2, log=None)
    assert expert["score"] >= 0.95 and expert["success_rate"] == 1.0
    assert random["score"] < 0.5 * expert["score"] and random["success_rate"] == 0.0
    assert [e["seed"] for e in random["episodes"]] == seeds
    assert len(list((tmp_path / "videos").glob("seed*.mp4"))) == 3
    # the random policy is reproducible per seed
    again = evaluate_policy("random", seeds[:1], workers=1, log=None)
    assert again["episodes"][0]["max_coverage"] == random["episodes"][0]["max_coverage"]


def test_uva_eval_cli_logs_to_mlflow(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([cli("uva-eval"), "--env", "pusht", "--policy", "random",
                           "--seeds", "100000,100001", "--max-steps", "16", "--workers", "1",
                           "--output", str(tmp_path / "eval"), "--tracking-uri", uri, "--experiment", "pusht-eval"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["num_episodes"] == 2 and result["max_steps"] == 16
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("pusht-eval")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["pusht/score"] == pytest.approx(result["score"])
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "pusht_eval/videos")]
    assert sorted(Path(a).name for a in arts) == ["seed100000.mp4", "seed100001.mp4"]
    bad = subprocess.run([cli("uva-eval"), "--policy", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "no policy bundle folder there" in bad.stderr
