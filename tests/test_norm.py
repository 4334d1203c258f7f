"""LayerNorm and RMSNorm match torch's modules; Residual arranges them as documented."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.norm import LayerNorm, Residual, RMSNorm


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values, so a lost scale or shift shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 4, 7)], ids=["1-d", "2-d", "3-d"])
def test_layer_norm_matches_torch_outputs_and_gradients(dtype, eps, shape):
    ours = _randomise(LayerNorm(7, eps=eps).to(dtype))
    reference = nn.LayerNorm(7, eps=eps, dtype=dtype)
    reference.load_state_dict(ours.state_dict())
    x = (torch.randn(shape, dtype=dtype) * 3 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    torch.testing.assert_close(ours(x), reference(x_ref))
    ours(x).square().sum().backward()
    reference(x_ref).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)


def test_layer_norm_output_has_zero_mean_and_unit_biased_variance():
    y = LayerNorm(16, eps=1e-12)(torch.randn(5, 16, dtype=torch.float64) * 10 + 4)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(5, dtype=torch.float64))


def test_a_constant_input_gives_zero_not_nan():
    assert torch.equal(LayerNorm(4)(torch.full((2, 4), 3.0)), torch.zeros(2, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_inputs_are_normalised_in_float32(dtype):
    x = torch.randn(4, 64) * 50 + 300
    ours = LayerNorm(64)(x.to(dtype))
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.float(), LayerNorm(64)(x.to(dtype).float()).to(dtype).float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("eps", [1e-6, 0.1])
def test_rms_norm_matches_torch(dtype, eps):
    ours = _randomise(RMSNorm(9, eps=eps).to(dtype))
    reference = nn.RMSNorm(9, eps=eps, dtype=dtype)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 9, dtype=dtype) * 2 + 0.5
    torch.testing.assert_close(ours(x), reference(x))


def test_rms_norm_does_not_centre():
    y = RMSNorm(3, eps=0.0 + 1e-12)(torch.tensor([[1.0, 1.0, 1.0]]))
    torch.testing.assert_close(y, torch.ones(1, 3))


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_norms_reject_the_wrong_width_and_bad_settings(cls):
    with pytest.raises(ValueError, match="d_model=8"):
        cls(8)(torch.randn(8, 4))
    with pytest.raises(TypeError):
        cls(8)(torch.arange(8))
    with pytest.raises(ValueError):
        cls(0)
    with pytest.raises(ValueError):
        cls(8, eps=0.0)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_residual_arranges_norm_sublayer_and_sum(norm_first):
    torch.manual_seed(0)
    sublayer = nn.Linear(6, 6)
    block = _randomise(Residual(6, sublayer, norm_first=norm_first), seed=1)
    x = torch.randn(2, 3, 6)
    norm = block.norm
    expected = x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))
    torch.testing.assert_close(block(x), expected)


def test_residual_passes_extra_arguments_to_the_sublayer():
    class Scale(nn.Module):
        def forward(self, x, factor, *, shift=0.0):
            return x * factor + shift

    block = Residual(4, Scale(), norm=nn.Identity())
    x = torch.randn(2, 4)
    torch.testing.assert_close(block(x, 2.0, shift=1.0), x + 2 * x + 1)


def test_residual_uses_the_norm_it_is_given():
    block = Residual(4, nn.Identity(), norm=RMSNorm(4))
    assert isinstance(block.norm, RMSNorm)
    with pytest.raises(TypeError, match="sublayer"):
        Residual(4, lambda x: x)


def test_residual_dropout_acts_only_in_training():
    torch.manual_seed(2)
    block = Residual(8, nn.Linear(8, 8), dropout=0.5)
    x = torch.randn(4, 8)
    assert torch.equal(block.eval()(x), block(x))
    assert not torch.equal(block.train()(x), block.eval()(x))
