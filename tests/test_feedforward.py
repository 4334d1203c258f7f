"""The feed-forward network, its activations and the parameter count, against torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.feedforward import (
    FeedForward,
    SwiGLU,
    count_parameters,
    gelu,
    swiglu_width,
)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_gelu_matches_torch(approximate, dtype):
    x = torch.linspace(-8, 8, 1001, dtype=dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(
        gelu(x, approximate), F.gelu(x, approximate=approximate), atol=tol, rtol=tol
    )


def test_gelu_forms_differ_by_less_than_a_thousandth():
    x = torch.linspace(-6, 6, 10001, dtype=torch.float64)
    gap = (gelu(x) - gelu(x, "tanh")).abs().max().item()
    assert 1e-5 < gap < 1e-3


def test_gelu_rejects_unknown_forms():
    with pytest.raises(ValueError, match="approximate"):
        gelu(torch.zeros(3), "sigmoid")


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu", "silu"])
def test_feed_forward_is_two_linear_layers_around_the_activation(activation):
    torch.manual_seed(0)
    ffn = FeedForward(8, 20, activation=activation)
    x = torch.randn(2, 5, 8)
    act = {
        "gelu": F.gelu,
        "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
        "relu": F.relu,
        "silu": F.silu,
    }[activation]
    expected = act(x @ ffn.up.weight.T + ffn.up.bias) @ ffn.down.weight.T + ffn.down.bias
    torch.testing.assert_close(ffn(x), expected)


def test_feed_forward_default_width_is_four_times_d_model():
    ffn = FeedForward(12)
    assert ffn.up.weight.shape == (48, 12) and ffn.down.weight.shape == (12, 48)


def test_feed_forward_treats_every_position_on_its_own():
    torch.manual_seed(1)
    ffn = FeedForward(8)
    x = torch.randn(3, 6, 8)
    out = ffn(x)
    for p in range(6):
        torch.testing.assert_close(ffn(x[:, p]), out[:, p])
    changed = x.clone()
    changed[:, 2] += 1.0
    diff = (ffn(changed) - out).abs().amax(dim=(0, 2))
    assert diff[2] > 0 and torch.all(diff[torch.arange(6) != 2] == 0)


def test_feed_forward_dropout_acts_only_in_training():
    torch.manual_seed(2)
    ffn = FeedForward(8, dropout=0.5)
    x = torch.randn(4, 8)
    assert torch.equal(ffn.eval()(x), ffn(x))
    assert not torch.equal(ffn.train()(x), ffn.eval()(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"d_model": 0}, {"d_model": 8, "d_ff": -1}, {"d_model": 8, "activation": "tanh"}],
    ids=["zero width", "negative d_ff", "unknown activation"],
)
def test_feed_forward_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FeedForward(**kwargs)


def test_swiglu_gates_one_projection_with_the_silu_of_another():
    torch.manual_seed(3)
    ffn = SwiGLU(8, 16)
    x = torch.randn(2, 3, 8)
    gate, up, down = ffn.gate.weight, ffn.up.weight, ffn.down.weight
    expected = (F.silu(x @ gate.T) * (x @ up.T)) @ down.T
    torch.testing.assert_close(ffn(x), expected)
    assert ffn.gate.bias is None and ffn.up.bias is None and ffn.down.bias is None


def test_swiglu_default_width_keeps_the_parameters_of_a_4x_network():
    assert swiglu_width(768) == 2048
    assert swiglu_width(10) % 8 == 0
    ratio = count_parameters(SwiGLU(768)) / (2 * 768 * 4 * 768)
    assert abs(ratio - 1) < 0.01


def test_count_parameters_counts_shared_weights_once():
    ffn = FeedForward(8, 32)
    assert count_parameters(ffn) == 8 * 32 + 32 + 32 * 8 + 8
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert count_parameters(tied) == 40
    ffn.up.requires_grad_(False)
    assert count_parameters(ffn, trainable_only=True) == 32 * 8 + 8
    with pytest.raises(TypeError):
        count_parameters(torch.zeros(3))
