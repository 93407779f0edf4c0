"""The run folder: COMPLETE markers, retention, torn folders, resolving init_from / --pretrained,
the weights an export ships, and loading weights with a clear error on another layout."""

import json

import pytest
import torch
from safetensors.torch import save_file

from pipeline.components.checkpoint import RunCheckpoints, export_weights, resolve_weights
from pipeline.weights import load_weights


def fake_step(root, step, complete=True, ema=True):
    d = root / f"step_{step}"
    d.mkdir(parents=True)
    save_file({"w": torch.full((2,), float(step))}, str(d / "model.safetensors"))
    if ema:
        save_file({"w": torch.full((2,), step + 0.5)}, str(d / "ema.safetensors"))
    (d / "model_config.json").write_text(json.dumps({"width": 8}))
    if complete:
        (d / "COMPLETE").write_text(str(step))
    return d


def test_only_complete_folders_count_and_the_latest_wins(tmp_path):
    ck = RunCheckpoints(tmp_path, keep=5)
    assert ck.complete() == [] and ck.latest_step() is None
    for s in (2, 10, 4):
        fake_step(tmp_path, s)
    fake_step(tmp_path, 12, complete=False)  # a job killed mid-save
    assert ck.complete() == [2, 4, 10] and ck.latest_step() == 10


def test_finish_keeps_the_last_k_and_removes_torn_folders(tmp_path):
    ck = RunCheckpoints(tmp_path, keep=2)
    for s in (1, 2, 3):
        fake_step(tmp_path, s)
    fake_step(tmp_path, 4, complete=False)  # torn, older job
    fake_step(tmp_path, 5, complete=False)  # the one being finished now
    ck.finish(5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_3", "step_5"]
    assert (tmp_path / "step_5" / "COMPLETE").read_text() == "5"


def test_resolve_weights_from_step_folder_checkpoints_folder_and_file(tmp_path):
    fake_step(tmp_path, 3)
    fake_step(tmp_path, 7)
    fake_step(tmp_path, 9, complete=False)
    w, arch = resolve_weights(tmp_path)  # a checkpoints folder: its latest complete step, EMA weights
    assert w == tmp_path / "step_7" / "ema.safetensors" and arch == {"width": 8}
    assert resolve_weights(tmp_path / "step_3", "model")[0] == tmp_path / "step_3" / "model.safetensors"
    assert resolve_weights(tmp_path / "step_3" / "model.safetensors")[0].name == "model.safetensors"
    no_ema = fake_step(tmp_path / "other", 1, ema=False)
    assert resolve_weights(no_ema)[0].name == "model.safetensors"  # a run without EMA
    with pytest.raises(FileNotFoundError, match="--pretrained .*does not exist"):
        resolve_weights(tmp_path / "nope", what="--pretrained")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="init_from .*neither a complete step_N checkpoint"):
        resolve_weights(tmp_path / "empty")
    bare = fake_step(tmp_path / "bare", 1)
    (bare / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        resolve_weights(bare, "model")


def test_export_weights_are_the_latest_ema(tmp_path):
    fake_step(tmp_path, 5)
    fake_step(tmp_path, 6, ema=False)
    step, weights, arch = export_weights(tmp_path)
    assert step == tmp_path / "step_6" and weights.name == "model.safetensors" and arch == {"width": 8}


def test_load_weights_exact_or_with_fresh_layers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))
    state = other.state_dict()
    with pytest.raises(ValueError, match=r"different model size or layout than tiny here: shape mismatch \[1.weight"):
        load_weights(model, state, "ckpt", "tiny")
    before = model[1].weight.detach().clone()
    fresh = load_weights(model, state, "ckpt", "tiny", fresh_ok=lambda k: k.startswith("1."))
    assert fresh == ["1.bias", "1.weight"]
    assert torch.equal(model[0].weight, other[0].weight) and torch.equal(model[1].weight, before)
    with pytest.raises(ValueError, match="missing"):
        load_weights(model, {"0.weight": state["0.weight"]}, "ckpt", "tiny")
