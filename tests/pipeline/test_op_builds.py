"""DeepSpeed's JIT-built ops are kept per environment and DeepSpeed version (TORCH_EXTENSIONS_DIR)."""

import os
import subprocess
import sys
from pathlib import Path

from pipeline.components.distributed import OP_BUILDS_KEY, isolate_op_builds, op_builds_key

ROOT = Path(__file__).resolve().parents[2]


def test_two_environments_get_folders_that_do_not_meet(tmp_path):
    a, b, c = {}, {}, {}
    da = isolate_op_builds(a, prefix="/envs/a", deepspeed_version="0.19.7")
    db = isolate_op_builds(b, prefix="/envs/b", deepspeed_version="0.19.8")
    dc = isolate_op_builds(c, prefix="/envs/a", deepspeed_version="0.19.8")  # same venv, DeepSpeed upgraded
    assert len({da, db, dc}) == 3
    for x, y in [(da, db), (da, dc), (db, dc)]:
        assert not Path(x).is_relative_to(y) and not Path(y).is_relative_to(x)
    assert "ds0.19.7" in da and "ds0.19.8" in db and a["TORCH_EXTENSIONS_DIR"] == da


def test_a_child_of_the_same_environment_keeps_the_folder_and_a_user_base_is_kept(tmp_path):
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "mine")}
    first = isolate_op_builds(env, prefix="/envs/a", deepspeed_version="1")
    assert Path(first).parent == tmp_path / "mine"
    assert isolate_op_builds(env, prefix="/envs/a", deepspeed_version="1") == first  # torchrun's ranks
    other = isolate_op_builds(dict(env), prefix="/envs/b", deepspeed_version="1")  # a child of another env
    assert Path(other).parent == tmp_path / "mine" and other != first


def test_a_launched_process_builds_in_its_environments_folder(tmp_path):
    """A process started with another environment's choice in its variables (as a job step
    inherits them) moves to its own folder before DeepSpeed looks for its ops."""
    foreign = tmp_path / "ext" / "py311-torch0-ds0.0.1-0000000000"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(foreign), OP_BUILDS_KEY: "py311-torch0-ds0.0.1-0000000000"}
    code = "from pipeline.components.distributed import isolate_op_builds; print(isolate_op_builds())"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    chosen = Path(out.stdout.strip())
    assert chosen == tmp_path / "ext" / op_builds_key()
    assert sys.prefix and op_builds_key().endswith(op_builds_key(sys.prefix).rsplit("-", 1)[1])
