"""The GPU check command, run small on the CPU, with the packages a GPU machine lacks (and the
wheel set leaves out) made unimportable in every process it starts: it must not need them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABSENT = ("ray", "decord", "av", "submitit", "sqlalchemy", "alembic", "flask", "mlflow.server")

BLOCKER = f'''
import importlib.abc
import importlib.util
import sys

ABSENT = {ABSENT!r}


def absent(name):
    return any(name == a or name.startswith(a + ".") for a in ABSENT)


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if absent(name):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed on the GPU machine)", name=name)
        return None


_find_spec = importlib.util.find_spec


def find_spec(name, package=None):  # probing for a missing package finds nothing
    return None if absent(name) else _find_spec(name, package)


importlib.util.find_spec = find_spec
sys.meta_path.insert(0, Absent())
'''


def test_gpu_check_runs_without_the_packages_left_out(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)  # imported at start-up by every Python process
    env = {**os.environ, "PYTHONPATH": str(site), "MLFLOW_ALLOW_FILE_STORE": "true"}
    check = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True, text=True)
    assert "not installed on the GPU machine" in check.stderr  # the blocker works in child processes
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--quick", "--device", "cpu", "--workers", "1",
                           "--work", str(tmp_path / "work"), "--json", str(tmp_path / "table.json"),
                           "--out", str(tmp_path / "stages")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    stages = [r[0] for r in rows]
    assert stages.index("demos") < stages.index("encode") < stages.index("train") < stages.index("resume")
    assert {"latency", "policy", "total"} <= set(stages)
    table = {(s, w): v for s, w, v in rows}
    assert int(table[("encode", "VAE on cpu, fp32: frames")]) > 0
    assert float(table[("train", "samples/s (batch 8)")]) > 0
    assert "| policy |" in proc.stdout and "score" in proc.stdout
    index = json.loads((tmp_path / "work" / "latents" / "index.json").read_text())
    assert index["vae_precision"] == "fp32" and index["num_episodes"] == 2
    assert (tmp_path / "work" / "bundle" / "policy.json").is_file()
    # every stage left its JSON as it ended, in order, each with its own rows
    written = sorted(p.name for p in (tmp_path / "stages").glob("*.json"))
    assert [n.split("_", 1)[1][:-5] for n in written] == ["demos", "encode", "train", "resume", "export", "latency",
                                                          "policy", "total"]
    train = json.loads((tmp_path / "stages" / written[2]).read_text())
    assert train["status"] == "ok" and {r[0] for r in train["rows"]} == {"train"}


def test_a_failing_stage_is_recorded_and_the_stages_that_need_it_are_skipped(tmp_path, monkeypatch):
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    monkeypatch.setattr(gpu_check, "ROWS", [])
    monkeypatch.setattr(gpu_check, "FAILED", set())
    monkeypatch.setitem(gpu_check.OUT, "dir", str(tmp_path))
    monkeypatch.setitem(gpu_check.OUT, "count", 0)

    def train():
        gpu_check.row("train", "started", 1)
        sys.exit("training failed (1): CUDA error")

    gpu_check.staged("train", train)
    gpu_check.staged("export", lambda: None, needs=("train",))
    gpu_check.staged("latency", lambda: gpu_check.row("latency", "ms", 2.0))
    recs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert [(r["stage"], r["status"]) for r in recs] == [("train", "failed"), ("export", "skipped"), ("latency", "ok")]
    assert "CUDA error" in recs[0]["error"] and recs[0]["rows"] == [["train", "started", "1"]]


def test_gpu_pusht_recipe_runs_its_stages_without_the_packages_left_out(tmp_path):
    """The GPU recipe's path (demos, encode, per-action uva model with proprioception, export
    with its statistics, closed loop) at tiny sizes on the CPU, without the packages the GPU
    machine lacks."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site), "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_pusht_recipe.py", "--quick", "--device", "cpu",
                           "--workers", "1", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "t.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    out = json.loads((tmp_path / "t.json").read_text())
    assert [r[0] for r in out["rows"]][-1] == "total" and len(out["episodes"]) == 1
    meta = json.loads((tmp_path / "work" / "bundle" / "policy.json").read_text())
    assert meta["model_config"]["action_batch_mul"] == 64 and meta["model_config"]["proprio_dim"] == 2
    assert meta["proprio_stats"]["dim"] == 2
