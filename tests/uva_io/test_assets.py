"""Configs and the default VAE are found from the installed package, from any working directory."""

import pytest

from uva_io.assets import find_artifact, find_config
from uva_io.config import load_config
from uva_io.vae_bundle import load_vae


def test_configs_and_the_default_vae_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config("configs/finetune/default.yaml").is_file()
    assert find_config("robots/franka.yaml") == find_config("configs/robots/franka.yaml")
    from preprocessing.encode import EncodeConfig

    cfg = load_config(EncodeConfig, "configs/preprocess/default.yaml")  # relative, not here: installed copy
    vae = load_vae(cfg.vae)  # the shipped default VAE, by its relative path
    assert vae.config.z_channels == 16
    assert find_artifact(cfg.vae).name == "vae-default-kl8.safetensors"
    local = tmp_path / "configs" / "mine.yaml"
    local.parent.mkdir()
    local.write_text("fps: 5.0\n")
    assert load_config(EncodeConfig, "configs/mine.yaml").fps == 5.0  # a file here wins


def test_missing_files_are_named():
    with pytest.raises(ValueError, match="config file 'configs/nope.yaml' does not exist"):
        find_config("configs/nope.yaml")
    with pytest.raises(ValueError, match="artifact '/abs/none.safetensors' does not exist"):
        find_artifact("/abs/none.safetensors")
