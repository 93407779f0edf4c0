"""YAML -> typed dataclasses: errors name the key, dotted overrides, defaults inheritance."""

from pathlib import Path

import pytest

from pipeline.train_config import TrainConfig
from preprocessing.encode import EncodeConfig
from uva_io.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_and_impossible_values_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim: {lr: 1.0e-4, warmup: 10}\n")
    with pytest.raises(ValueError, match="warmup"):
        load_config(TrainConfig, f)
    with pytest.raises(ValueError, match="micro_batch_size"):
        load_config(TrainConfig, None, ["micro_batch_size=0"])
    with pytest.raises(ValueError, match="zero_stage"):
        load_config(TrainConfig, None, ["zero_stage=4"])
    with pytest.raises(ValueError, match="total_steps"):
        load_config(TrainConfig, None, ["total_steps=many"])
    with pytest.raises(ValueError, match="mode_weights"):
        load_config(TrainConfig, None, ["mode_weights={video: 0.0}"])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_dotted_overrides_and_yaml_number_forms(tmp_path):
    cfg = load_config(TrainConfig, ROOT / "configs/pretrain/default.yaml",
                      ["optim.lr=1e-5", "data.window.num_future=4", "model.overrides.width=64"])
    assert cfg.optim.lr == 1e-5 and isinstance(cfg.optim.lr, float)  # YAML 1.1 reads 1e-5 as a string
    assert cfg.data.window.num_future == 4 and cfg.model.overrides["width"] == 64
    assert cfg.model.overrides["num_heads"] == 4  # the file's other overrides stay
    enc = load_config(EncodeConfig, ROOT / "configs/preprocess/default.yaml", ["fps=null"])
    assert enc.fps is None


def test_two_stage_recipe_configs():
    s1 = load_config(TrainConfig, ROOT / "configs/pretrain/uva_b_stage1_video.yaml")
    s2 = load_config(TrainConfig, ROOT / "configs/pretrain/uva_b_stage2_all.yaml")
    assert s1.mode_weights == {"video": 1.0} and s1.init_from is None
    assert set(s2.mode_weights) == {"policy", "video", "forward_dynamics", "inverse_dynamics", "joint"}
    assert s2.init_from == "runs/uva_b/stage1_video/checkpoints" and s2.init_weights == "ema"
    assert s2.model == s1.model and s2.data.window == s1.data.window  # inherited through defaults:
    assert s2.run_dir != s1.run_dir


def test_the_mar_recipe_configs_use_the_layout_the_import_is_told():
    import re

    s1 = load_config(TrainConfig, ROOT / "configs/pretrain/mar_b_stage1_video.yaml")
    s2 = load_config(TrainConfig, ROOT / "configs/pretrain/mar_b_stage2_all.yaml")
    assert s1.mode_weights == {"video": 1.0} and s1.init_from == "artifacts/mar_base_init.safetensors"
    assert s2.init_from == "runs/mar_b/stage1_video/checkpoints" and s2.model == s1.model
    text = (ROOT / "configs/pretrain/mar_b_stage1_video.yaml").read_text()
    told = re.search(r"--set (.*?)--output", text, re.S).group(1).replace("#", " ").replace("\\", " ").split()
    sets = {k: v for k, _, v in (t.partition("=") for t in told)}
    want = {k: str(v).lower() for k, v in s1.model.overrides.items()}
    assert sets == want  # the import's --set list is exactly the run's model settings
