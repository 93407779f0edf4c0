"""Fine-tuning's weight adaptation rules: robot layers re-created, everything else must match."""

import pytest
import torch

from pipeline.adapt import load_adapted, model_overrides, size_name
from uva import UVA, model_config
from uva.config import MODEL_SIZES


def tiny(**kw):
    torch.manual_seed(0)
    return UVA(model_config("uva-tiny", **kw))


def test_robot_layers_are_recreated_and_the_rest_is_kept():
    pre = tiny(action_dim=2)
    target = tiny(action_dim=8, proprio_dim=3)
    fresh_head = target.action_head.state_dict()
    recreated = load_adapted(target, pre.state_dict(), "pre", "uva-tiny")
    assert recreated == ["action_head", "embed.action_proj", "embed.proprio"]
    for k, v in pre.state_dict().items():
        if k.startswith("backbone.") or k.startswith("video_head."):
            assert torch.equal(target.state_dict()[k], v)
    same = [torch.equal(v, fresh_head[k]) for k, v in target.action_head.state_dict().items()
            if v.shape != pre.action_head.state_dict()[k].shape]
    assert same and all(same)  # re-created layers keep the target's own init


def test_same_robot_loads_everything_and_another_size_is_refused():
    pre = tiny()
    target = tiny()
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    assert load_adapted(target, pre.state_dict(), "pre", "uva-tiny") == []
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), pre.state_dict().values()))
    wide = tiny(width=48, decoder_width=48)
    with pytest.raises(ValueError, match="different model size or layout than uva-tiny"):
        load_adapted(tiny(), wide.state_dict(), "wide", "uva-tiny")


def test_size_names_and_overrides_from_a_checkpoint_architecture():
    from dataclasses import asdict

    arch = asdict(MODEL_SIZES["uva-S"])
    assert size_name(arch) == "uva-S"
    assert size_name({**arch, "width": 1}) == "custom"
    keep = model_overrides({**arch, "action_dim": 7, "num_history": 2})
    assert "action_dim" not in keep and "num_history" not in keep and keep["width"] == arch["width"]
