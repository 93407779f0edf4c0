"""EMA: the decay warms up, the shadow follows the weights, swapping in and out is exact."""

import pytest
import torch

from pipeline.components.ema import EMA


def test_decay_warms_up_and_the_average_follows():
    p = torch.nn.Parameter(torch.zeros(3))
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    model = torch.nn.Module()
    model.p, model.frozen = p, frozen
    ema = EMA(model, decay=0.999)
    assert len(ema.params) == 1  # parameters without gradients are not averaged
    with torch.no_grad():
        p.fill_(1.0)
    ema.update(1)  # decay min(0.999, 2/11): the first updates move the average a lot
    assert ema.shadow[0] == pytest.approx(torch.full((3,), 1 - 2 / 11))
    for step in range(2, 2000):
        ema.update(step)
    assert ema.shadow[0] == pytest.approx(torch.ones(3), abs=1e-3)


def test_swapped_in_restores_the_trained_weights_and_state_round_trips():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    trained = model.weight.detach().clone()
    ema.shadow[0].fill_(7.0)
    with ema.swapped_in():
        assert torch.all(model.weight == 7.0)
    assert torch.equal(model.weight, trained)
    other = EMA(model, decay=0.5)
    other.load_state(ema.state())
    assert torch.equal(other.shadow[0], ema.shadow[0])
