"""Position encodings: the layouts are exact and the rotary property holds."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    rotary_angles,
    sinusoidal_encoding,
)

# ----------------------------------------------------------------------------------------------
# sinusoidal
# ----------------------------------------------------------------------------------------------


def test_sinusoidal_encoding_follows_the_formula_channel_by_channel():
    seq, d_model = 7, 10
    pe = sinusoidal_encoding(seq, d_model)
    for pos in range(seq):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_sinusoidal_encoding_shape_dtype_and_range():
    pe = sinusoidal_encoding(50, 16, base=100.0)
    assert pe.shape == (50, 16) and pe.dtype == torch.float32
    assert pe.abs().max() <= 1.0
    assert pe[0, 0::2].eq(0).all() and pe[0, 1::2].eq(1).all()


def test_sinusoidal_encoding_similarity_depends_only_on_distance():
    pe = sinusoidal_encoding(64, 32).double()
    for d in (1, 5, 20):
        dots = (pe[: 64 - d] * pe[d:]).sum(-1)
        assert torch.allclose(dots, dots[0].expand_as(dots), atol=1e-5)


@pytest.mark.parametrize(
    ("seq", "d_model", "error"),
    [(4, 7, ValueError), (0, 8, ValueError), (4, 8.0, TypeError)],
    ids=["odd d_model", "no positions", "float width"],
)
def test_sinusoidal_encoding_rejects_bad_sizes(seq, d_model, error):
    with pytest.raises(error):
        sinusoidal_encoding(seq, d_model)


def test_odd_d_model_error_names_the_value():
    with pytest.raises(ValueError, match="even.*7"):
        sinusoidal_encoding(4, 7)


def test_sinusoidal_module_adds_the_table_and_is_not_trained():
    module = SinusoidalPositionalEncoding(16, 8)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(module(x), x + sinusoidal_encoding(5, 8))
    assert not list(module.parameters()) and "pe" not in module.state_dict()
    assert module(x.double()).dtype == torch.float64


# ----------------------------------------------------------------------------------------------
# learned
# ----------------------------------------------------------------------------------------------


def test_learned_positions_add_the_first_rows_and_train_them():
    module = LearnedPositionalEmbedding(10, 4)
    assert module.weight.shape == (10, 4) and module.weight.requires_grad
    x = torch.randn(3, 6, 4)
    out = module(x)
    torch.testing.assert_close(out, x + module.weight[:6])
    out.sum().backward()
    assert module.weight.grad[:6].eq(3).all() and module.weight.grad[6:].eq(0).all()


def test_learned_positions_reject_a_sequence_longer_than_max_seq():
    with pytest.raises(ValueError, match="longer than max_seq=4"):
        LearnedPositionalEmbedding(4, 2)(torch.zeros(1, 5, 2))


def test_learned_positions_reject_the_wrong_width():
    with pytest.raises(ValueError, match="seq, 4"):
        LearnedPositionalEmbedding(8, 4)(torch.zeros(1, 3, 5))


# ----------------------------------------------------------------------------------------------
# rotary
# ----------------------------------------------------------------------------------------------


def _rotary_by_complex_numbers(x, positions, base=10000.0):
    """A second implementation: each (2i, 2i+1) pair as a complex number times e^(i angle)."""
    d_head = x.shape[-1]
    freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angle = positions.double().unsqueeze(-1) * freq
    z = torch.view_as_complex(x.double().unflatten(-1, (d_head // 2, 2)).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2)


def test_apply_rotary_equals_multiplication_by_unit_complex_numbers():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(apply_rotary(x), _rotary_by_complex_numbers(x, torch.arange(9)))


def test_apply_rotary_with_explicit_positions():
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    positions = torch.tensor([[3, 4, 5, 6], [10, 11, 12, 13]])
    expected = _rotary_by_complex_numbers(x, positions)
    torch.testing.assert_close(apply_rotary(x, positions), expected)
    torch.testing.assert_close(apply_rotary(x, torch.arange(4)), apply_rotary(x))


def test_rotary_pairs_are_interleaved_channels():
    # A vector with only channel 0 set rotates into channel 1, never into channel d_head / 2.
    x = torch.zeros(1, 2, 8)
    x[0, :, 0] = 1.0
    out = apply_rotary(x)
    assert math.isclose(out[0, 1, 0].item(), math.cos(1.0), abs_tol=1e-6)
    assert math.isclose(out[0, 1, 1].item(), math.sin(1.0), abs_tol=1e-6)
    assert out[0, 1, 2:].eq(0).all()


def test_rotary_keeps_norms_and_dtype():
    x = torch.randn(3, 16, 8, dtype=torch.float32)
    out = apply_rotary(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))


def test_rotary_dot_product_depends_only_on_the_distance():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(16, generator=gen, dtype=torch.float64)
    k = torch.randn(16, generator=gen, dtype=torch.float64)

    def score(m, n):
        rq = apply_rotary(q.view(1, 16), torch.tensor([m]))
        rk = apply_rotary(k.view(1, 16), torch.tensor([n]))
        return (rq * rk).sum().item()

    for m, n in [(0, 3), (5, 2), (40, 40)]:
        assert math.isclose(score(m, n), score(m + 17, n + 17), abs_tol=1e-9)
    assert not math.isclose(score(0, 3), score(0, 4), abs_tol=1e-6)


def test_rotary_angles_table():
    cos, sin = rotary_angles(5, 6, base=100.0)
    assert cos.shape == sin.shape == (5, 3)
    angle = 4 * 100.0 ** (-2 / 6)
    assert math.isclose(cos[4, 1].item(), math.cos(angle), abs_tol=1e-6)
    assert math.isclose(sin[4, 1].item(), math.sin(angle), abs_tol=1e-6)


@pytest.mark.parametrize(
    ("x", "positions", "error"),
    [
        (torch.zeros(4, 7), None, ValueError),
        (torch.zeros(4, 8), torch.arange(5), ValueError),
        (torch.zeros(4, 8), torch.arange(4.0), TypeError),
        (torch.zeros(4, 8, dtype=torch.long), None, TypeError),
    ],
    ids=["odd d_head", "positions of another length", "float positions", "integer x"],
)
def test_apply_rotary_rejects_bad_input(x, positions, error):
    with pytest.raises(error):
        apply_rotary(x, positions)


# ----------------------------------------------------------------------------------------------
# ALiBi
# ----------------------------------------------------------------------------------------------


def test_alibi_slopes_are_geometric_for_a_power_of_two():
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))


def test_alibi_slopes_for_other_head_counts_stay_in_range():
    slopes = alibi_slopes(12)
    assert slopes.shape == (12,) and len(set(slopes.tolist())) == 12
    assert slopes.max() < 1.0 and slopes.min() >= 2.0**-8
    torch.testing.assert_close(slopes[:8], alibi_slopes(8))


def test_alibi_bias_is_minus_slope_times_distance():
    bias = alibi_bias(2, 4)
    assert bias.shape == (2, 4, 4) and bias.diagonal(dim1=1, dim2=2).eq(0).all()
    assert bias[0, 3, 0].item() == -3 * alibi_slopes(2)[0].item()
