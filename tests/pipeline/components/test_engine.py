"""The optimizer's parameter groups."""

from pipeline.components.engine import param_groups
from uva import UVA, model_config


def test_no_decay_on_1d_parameters_keeps_decay_on_matrices():
    model = UVA(model_config("uva-tiny"))
    model.embed.fuse.weight.requires_grad_(False)  # frozen parameters are in no group
    one = param_groups(model, 0.05, False)
    assert len(one) == 1 and one[0]["weight_decay"] == 0.05
    decay, flat = param_groups(model, 0.05, True)
    assert (decay["weight_decay"], flat["weight_decay"]) == (0.05, 0.0)
    ids = lambda ps: {id(p) for p in ps}
    assert ids(decay["params"]) | ids(flat["params"]) == ids(one[0]["params"])
    assert not ids(decay["params"]) & ids(flat["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in ids(flat["params"])} >= {"embed.mask_token", "backbone.encoder.norm.weight",
                                                      "embed.fuse.bias"}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert id(model.embed.time_pos) in ids(decay["params"])  # position embeddings (not 1-d) keep decay
