"""Scaled dot-product attention agrees with torch and keeps its promises about masks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import (
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
)
from course_lib.checks import tolerance_for


def _qkv(*batch, seq_q=5, seq_k=6, d_head=8, d_v=4, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, seq_q, d_head, generator=gen, dtype=dtype)
    k = torch.randn(*batch, seq_k, d_head, generator=gen, dtype=dtype)
    v = torch.randn(*batch, seq_k, d_v, generator=gen, dtype=dtype)
    return q, k, v


def _assert_close(got, expected):
    atol, rtol = tolerance_for(expected.dtype)
    torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------------------------
# softmax
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [-1, 0, 1], ids=["last", "first", "middle"])
def test_softmax_matches_torch(dim):
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim))


def test_softmax_does_not_overflow_on_large_scores():
    x = torch.tensor([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]])
    got = softmax(x)
    assert torch.isfinite(got).all()
    _assert_close(got, torch.softmax(x.double(), dim=-1).float())


def test_softmax_of_an_all_minus_infinity_row_is_zero_with_zero_gradient():
    x = torch.tensor([[0.5, float("-inf"), 1.0], [float("-inf")] * 3], requires_grad=True)
    y = softmax(x)
    assert y[1].tolist() == [0.0, 0.0, 0.0]
    assert y[0, 1].item() == 0.0 and math.isclose(y[0].sum().item(), 1.0, rel_tol=1e-6)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].eq(0).all()


def test_softmax_rejects_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        softmax(torch.tensor([1, 2, 3]))


# ----------------------------------------------------------------------------------------------
# masks
# ----------------------------------------------------------------------------------------------


def test_causal_mask_is_the_lower_triangle_with_the_diagonal():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert causal_mask(4).dtype == torch.bool


def test_causal_mask_with_more_keys_aligns_queries_to_the_last_positions():
    # Two new queries after three cached keys: positions 3 and 4 of 5.
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 5), expected)
    assert causal_mask(1, 7).all()


def test_causal_mask_rejects_negative_sizes():
    with pytest.raises(ValueError, match="seq_q"):
        causal_mask(-1)


def test_padding_mask_marks_real_keys_true():
    mask = padding_mask(torch.tensor([2, 0, 4]), 4)
    assert mask.shape == (3, 1, 4) and mask.dtype == torch.bool
    assert mask[:, 0].int().tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]


def test_padding_mask_is_the_opposite_of_torch_key_padding_mask():
    lengths, seq = torch.tensor([3, 5]), 5
    torch_style = torch.arange(seq).unsqueeze(0) >= lengths.unsqueeze(1)  # True = ignore
    assert torch.equal(padding_mask(lengths, seq)[:, 0], ~torch_style)


@pytest.mark.parametrize(
    ("lengths", "seq", "error"),
    [
        (torch.tensor([1, 6]), 5, ValueError),
        (torch.tensor([-1]), 5, ValueError),
        (torch.tensor([[1, 2]]), 5, ValueError),
        (torch.tensor([1.0, 2.0]), 5, TypeError),
    ],
    ids=["too long", "negative", "two-dimensional", "float lengths"],
)
def test_padding_mask_rejects_bad_lengths(lengths, seq, error):
    with pytest.raises(error):
        padding_mask(lengths, seq)


# ----------------------------------------------------------------------------------------------
# attention against torch
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_without_mask_matches_torch(dtype):
    q, k, v = _qkv(2, 3, dtype=dtype)
    out, weights = scaled_dot_product_attention(q, k, v)
    _assert_close(out, F.scaled_dot_product_attention(q, k, v))
    _assert_close(weights, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1))


@pytest.mark.parametrize("kind", ["causal", "padding", "both"])
def test_attention_with_mask_matches_torch(kind):
    q, k, v = _qkv(2, 3, seq_q=6, seq_k=6)
    lengths = torch.tensor([6, 4])
    masks = {
        "causal": causal_mask(6),
        "padding": padding_mask(lengths, 6).unsqueeze(1),  # (batch, 1, 1, seq)
        "both": causal_mask(6) & padding_mask(lengths, 6).unsqueeze(1),
    }
    out, _ = scaled_dot_product_attention(q, k, v, mask=masks[kind])
    _assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=masks[kind]))


def test_attention_matches_torch_multihead_with_its_opposite_padding_convention():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 1, batch_first=True, bias=False).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    expected, _ = mha(x, x, x, key_padding_mask=~padding_mask(lengths, 5)[:, 0])
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    out, _ = scaled_dot_product_attention(
        x @ w_q.T, x @ w_k.T, x @ w_v.T, mask=padding_mask(lengths, 5)
    )
    _assert_close(mha.out_proj(out), expected)


# ----------------------------------------------------------------------------------------------
# attention's promises
# ----------------------------------------------------------------------------------------------


def test_weights_are_non_negative_and_sum_to_one_over_visible_keys():
    q, k, v = _qkv(4, seq_q=6, seq_k=6)
    mask = causal_mask(6) & padding_mask(torch.tensor([6, 3, 1, 5]), 6)
    _, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert (weights >= 0).all()
    assert weights.masked_select(~mask.expand_as(weights)).eq(0).all()
    _assert_close(weights.sum(-1), torch.ones(4, 6, dtype=torch.float64))


def test_changing_a_later_token_never_changes_an_earlier_output():
    q, k, v = _qkv(2, seq_q=7, seq_k=7)
    out, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(7))
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, 4:] += 5.0
    k2[:, 4:] -= 3.0
    v2[:, 4:] *= -2.0
    out2, _ = scaled_dot_product_attention(q2, k2, v2, mask=causal_mask(7))
    assert torch.equal(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_changing_a_padded_position_never_changes_a_real_output():
    q, k, v = _qkv(2, seq_q=6, seq_k=6)
    lengths = torch.tensor([4, 6])
    mask = padding_mask(lengths, 6)
    out, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[0, 4:] = 100.0
    v2[0, 4:] = -100.0
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask=mask)
    assert torch.equal(out[0, :4], out2[0, :4]) and torch.equal(out[1], out2[1])


def test_fully_masked_rows_give_zero_output_and_finite_gradients():
    q, k, v = (t.requires_grad_() for t in _qkv(2, seq_q=4, seq_k=4))
    mask = padding_mask(torch.tensor([0, 2]), 4)  # the first sequence is all padding
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert out[0].eq(0).all() and weights[0].eq(0).all()
    (out.square().sum() + weights.sum()).backward()
    for grad in (q.grad, k.grad, v.grad):
        assert torch.isfinite(grad).all()
    assert q.grad[0].eq(0).all()


def test_dropout_only_while_training():
    q, k, v = _qkv(1, seq_q=16, seq_k=16)
    plain, _ = scaled_dot_product_attention(q, k, v)
    same, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False)
    torch.manual_seed(0)
    dropped, weights = scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=True)
    assert torch.equal(plain, same) and not torch.allclose(plain, dropped)
    assert weights.eq(0).any()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"k": torch.randn(1, 6, 7)}, ValueError, "same width"),
        ({"v": torch.randn(1, 5, 4)}, ValueError, "same length"),
        ({"mask": torch.ones(5, 6)}, TypeError, "bool"),
        ({"mask": torch.ones(4, 6, dtype=torch.bool)}, ValueError, "broadcast"),
        ({"q": torch.ones(1, 5, 8, dtype=torch.long)}, TypeError, "floating-point"),
        ({"dropout_p": 1.0}, ValueError, "dropout_p"),
    ],
    ids=["key width", "value length", "float mask", "mask shape", "integer q", "dropout"],
)
def test_attention_rejects_bad_input_clearly(change, error, match):
    q, k, v = _qkv(1, dtype=torch.float32)
    args = {"q": q, "k": k, "v": v, **change}
    with pytest.raises(error, match=match):
        scaled_dot_product_attention(**args)
