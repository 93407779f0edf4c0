"""`pip install .` (not editable) into a fresh venv, then every console script from a temporary
working directory: configs, robots and the default VAE come from the installed package.

The fresh venv gets the project only; its dependencies (torch, ray, ...) are borrowed from the
environment running the tests through a path file, so the test downloads nothing."""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_video_file

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("uva-make-synthetic-demos", "uva-make-pusht-demos", "uva-train-vae", "uva-encode", "uva-pretrain",
           "uva-finetune", "uva-eval")
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "runs", "data", "logs", "build", "mlruns", "__pycache__",
                                    "*.egg-info", ".pytest_cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=300)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    wheel = next(wheels.glob("uva_pipeline-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # dependencies from the test environment, after the venv's own site-packages
    Path(purelib, "borrowed_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp / "elsewhere"
    work.mkdir()
    return {"venv": venv, "py": py, "purelib": Path(purelib), "work": work}


@pytest.mark.slow
def test_installed_package_is_the_one_imported(installed):
    out = subprocess.run([str(installed["py"]), "-c", "import pipeline, preprocessing, uva, uva_io, uva_sim, "
                          "uva_configs, uva_artifacts; print(json.dumps([m.__file__ for m in (pipeline, "
                          "preprocessing, uva, uva_io, uva_sim, uva_configs, uva_artifacts)]))".replace(
                              "import pipeline", "import json, pipeline")],
                         cwd=installed["work"], capture_output=True, text=True, check=True)
    for path in json.loads(out.stdout):
        assert Path(path).is_relative_to(installed["purelib"]), path
    check = ("from pipeline.robots import load_robot; from pipeline.finetune import FinetuneConfig; "
             "from uva_io.config import load_config; "
             "assert load_robot('franka').action_dim == 8; "
             "assert load_config(FinetuneConfig, 'configs/finetune/pusht_default.yaml').stages[0].name == 'heads'")
    subprocess.run([str(installed["py"]), "-c", check], cwd=installed["work"], check=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_answers_help(installed, script):
    proc = subprocess.run([str(installed["venv"] / "bin" / script), "--help"], cwd=installed["work"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


@pytest.mark.slow
def test_encode_from_another_directory_with_the_packaged_config_and_vae(installed):
    work = installed["work"]
    (work / "videos").mkdir()
    make_video_file(work / "videos" / "clip.mp4", num_frames=12, size=(48, 64))
    proc = subprocess.run([str(installed["venv"] / "bin" / "uva-encode"), "--no-progress", "--video-folder", "videos",
                           "--output", "latents", "--config", "configs/preprocess/default.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(work)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = json.loads((work / "latents" / "index.json").read_text())
    assert index["num_episodes"] == 1 and index["config"]["vae"] == "artifacts/vae/vae-default-kl8.safetensors"
