"""Multi-head attention agrees with torch.nn.MultiheadAttention and with a head-by-head loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.attention import causal_mask, padding_mask
from course_lib.multihead import (
    GroupedQueryAttention,
    MultiHeadAttention,
    attention_head_by_head,
    load_from_torch,
    merge_heads,
    repeat_kv_heads,
    split_heads,
)


def _torch_pair(d_model, n_heads, bias=True, dtype=torch.float32, seed=0):
    """A torch module with random biases and ours with its weights loaded."""
    torch.manual_seed(seed)
    reference = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True, dtype=dtype)
    if bias:
        with torch.no_grad():  # torch starts biases at zero, which would hide a lost bias
            reference.in_proj_bias.normal_()
            reference.out_proj.bias.normal_()
    ours = MultiHeadAttention(d_model, n_heads, bias=bias).to(dtype)
    load_from_torch(ours, reference)
    return ours.eval(), reference.eval()


def test_split_heads_gives_each_head_its_own_channels():
    x = torch.arange(2 * 3 * 8.0).view(2, 3, 8)  # (batch, seq, d_model)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 2)
    for h in range(4):
        assert torch.equal(heads[:, h], x[..., 2 * h : 2 * h + 2])


def test_merge_heads_undoes_split_heads():
    x = torch.randn(3, 5, 12)
    assert torch.equal(merge_heads(split_heads(x, 3)), x)
    assert torch.equal(merge_heads(split_heads(x, 1)), x)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (lambda: split_heads(torch.randn(2, 3, 10), 4), ValueError),
        (lambda: split_heads(torch.randn(3, 10), 2), ValueError),
        (lambda: split_heads(torch.randn(2, 3, 8), 0), ValueError),
        (lambda: merge_heads(torch.randn(2, 3, 8)), ValueError),
        (lambda: MultiHeadAttention(10, 3), ValueError),
        (lambda: MultiHeadAttention(8, 2, dropout=1.0), ValueError),
    ],
    ids=["indivisible", "2-d input", "zero heads", "3-d merge", "module indivisible", "dropout 1"],
)
def test_bad_sizes_raise_clear_errors(bad, error):
    with pytest.raises(error):
        bad()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_self_attention_matches_torch(dtype, bias):
    ours, reference = _torch_pair(16, 4, bias=bias, dtype=dtype)
    x = torch.randn(3, 7, 16, dtype=dtype)
    expected = reference(x, x, x, need_weights=False)[0]
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours(x), expected, atol=atol, rtol=atol)


def test_attention_over_another_sequence_matches_torch():
    ours, reference = _torch_pair(12, 3)
    query, memory = torch.randn(2, 4, 12), torch.randn(2, 9, 12)
    expected = reference(query, memory, memory, need_weights=False)[0]
    torch.testing.assert_close(ours(query, memory), expected)
    value = torch.randn(2, 9, 12)
    expected = reference(query, memory, value, need_weights=False)[0]
    torch.testing.assert_close(ours(query, memory, value), expected)


@pytest.mark.parametrize("need_weights", [False, True], ids=["fast", "with-weights"])
def test_masks_match_torch_with_the_opposite_convention(need_weights):
    ours, reference = _torch_pair(16, 2)
    x = torch.randn(3, 6, 16)

    # A causal mask: torch's attn_mask hides where True, ours shows where True.
    mask = causal_mask(6)
    expected, expected_w = reference(x, x, x, attn_mask=~mask, average_attn_weights=False)
    got = ours(x, mask=mask, need_weights=need_weights)
    if need_weights:
        got, weights = got
        torch.testing.assert_close(weights, expected_w)
    torch.testing.assert_close(got, expected)

    # A padding mask (batch, 1, seq_k) becomes torch's key_padding_mask (batch, seq_k).
    pad = padding_mask(torch.tensor([6, 4, 2]), 6)
    expected = reference(x, x, x, key_padding_mask=~pad[:, 0], need_weights=False)[0]
    got = ours(x, mask=pad, need_weights=need_weights)
    torch.testing.assert_close(got[0] if need_weights else got, expected)


def test_padding_mask_with_batch_equal_to_heads_is_not_read_per_head():
    # With batch == n_heads a (batch, 1, seq_k) mask would silently broadcast over the heads.
    ours, reference = _torch_pair(8, 2)
    x = torch.randn(2, 5, 8)
    pad = padding_mask(torch.tensor([5, 2]), 5)
    expected = reference(x, x, x, key_padding_mask=~pad[:, 0], need_weights=False)[0]
    torch.testing.assert_close(ours(x, mask=pad), expected)


def test_per_head_masks_of_four_dimensions():
    torch.manual_seed(1)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.rand(2, 2, 5, 5) > 0.3
    mask |= torch.eye(5, dtype=torch.bool)  # every query sees at least itself
    fast = mha(x, mask=mask)
    slow, weights = mha(x, mask=mask, need_weights=True)
    torch.testing.assert_close(fast, slow)
    assert torch.all(weights[~mask.expand_as(weights)] == 0)
    torch.testing.assert_close(attention_head_by_head(mha, x, mask=mask), fast)


@pytest.mark.parametrize("need_weights", [False, True], ids=["fast", "with-weights"])
def test_query_with_no_visible_key_gives_zero_attention_and_finite_gradients(need_weights):
    torch.manual_seed(2)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 4, 8, requires_grad=True)
    mask = causal_mask(4).clone()
    mask[1] = False  # query 1 sees nothing
    out = mha(x, mask=mask, need_weights=need_weights)
    out = out[0] if need_weights else out
    # Only the output projection's bias is left at the blind query.
    torch.testing.assert_close(out[:, 1], mha.out_proj.bias.expand(2, 8))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters())


def test_fast_path_equals_the_path_that_returns_weights():
    torch.manual_seed(3)
    mha = MultiHeadAttention(24, 6).eval()
    query, memory = torch.randn(3, 5, 24), torch.randn(3, 8, 24)
    pad = padding_mask(torch.tensor([8, 3, 0]), 8)  # the last sequence is all padding
    fast = mha(query, memory, mask=pad)
    slow, weights = mha(query, memory, mask=pad, need_weights=True)
    torch.testing.assert_close(fast, slow)
    assert weights.shape == (3, 6, 5, 8)
    torch.testing.assert_close(weights.sum(-1)[:2], torch.ones(2, 6, 5))
    assert torch.all(weights[2] == 0)


@pytest.mark.parametrize(("seq_q", "seq_k"), [(6, 6), (3, 7)], ids=["square", "cached-keys"])
def test_is_causal_equals_an_explicit_causal_mask(seq_q, seq_k):
    torch.manual_seed(4)
    mha = MultiHeadAttention(8, 2).eval()
    query, keys = torch.randn(2, seq_q, 8), torch.randn(2, seq_k, 8)
    expected = mha(query, keys, mask=causal_mask(seq_q, seq_k))
    torch.testing.assert_close(mha(query, keys, is_causal=True), expected)
    out, weights = mha(query, keys, is_causal=True, need_weights=True)
    torch.testing.assert_close(out, expected)
    # Combined with a padding mask, both masks apply.
    pad = padding_mask(torch.tensor([seq_k, seq_k - 1]), seq_k)
    expected = mha(query, keys, mask=causal_mask(seq_q, seq_k) & pad)
    torch.testing.assert_close(mha(query, keys, mask=pad, is_causal=True), expected)


def test_module_equals_running_each_head_separately():
    torch.manual_seed(5)
    mha = MultiHeadAttention(20, 5).eval()
    query, memory = torch.randn(2, 6, 20), torch.randn(2, 3, 20)
    torch.testing.assert_close(attention_head_by_head(mha, query), mha(query))
    pad = padding_mask(torch.tensor([3, 1]), 3)
    torch.testing.assert_close(
        attention_head_by_head(mha, query, memory, mask=pad), mha(query, memory, mask=pad)
    )


def test_dropout_acts_only_in_training():
    torch.manual_seed(6)
    mha = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 8, 16)
    mha.eval()
    assert torch.equal(mha(x), mha(x))
    mha.train()
    assert not torch.allclose(mha(x), mha.eval()(x))


def test_bad_masks_raise_clear_errors():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 4, 8)
    with pytest.raises(TypeError, match="bool"):
        mha(x, mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        mha(x, mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        mha(x, mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch, seq, d_model"):
        mha(torch.randn(4, 8))


def test_load_from_torch_refuses_modules_that_do_not_fit():
    with pytest.raises(ValueError, match="batch_first"):
        load_from_torch(MultiHeadAttention(8, 2), nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="sizes differ"):
        load_from_torch(MultiHeadAttention(8, 2), nn.MultiheadAttention(8, 4, batch_first=True))
    with pytest.raises(ValueError, match="bias"):
        load_from_torch(
            MultiHeadAttention(8, 2), nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
        )
    with pytest.raises(TypeError):
        load_from_torch(MultiHeadAttention(8, 2), nn.Linear(8, 8))


def test_repeat_kv_heads_keeps_each_group_together():
    x = torch.arange(2.0).view(1, 2, 1, 1)  # (batch, n_kv_heads, seq, d_head)
    assert repeat_kv_heads(x, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_grouped_query_attention_with_as_many_kv_heads_is_multi_head_attention():
    torch.manual_seed(7)
    gqa = GroupedQueryAttention(16, 4, n_kv_heads=4)
    mha = MultiHeadAttention(16, 4)
    mha.load_state_dict(gqa.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(gqa(x, mask=causal_mask(5)), mha(x, mask=causal_mask(5)))


def test_grouped_query_attention_shares_key_value_heads_within_a_group():
    torch.manual_seed(8)
    gqa = GroupedQueryAttention(16, 4, n_kv_heads=2)
    assert gqa.k_proj.weight.shape == (8, 16)
    # The same computation with each shared key/value head copied into a full-size module.
    mha = MultiHeadAttention(16, 4)
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            small, full = getattr(gqa, name), getattr(mha, name)
            full.weight.copy_(small.weight.view(2, 1, 4, 16).expand(2, 2, 4, 16).reshape(16, 16))
            full.bias.copy_(small.bias.view(2, 1, 4).expand(2, 2, 4).reshape(16))
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(gqa(x, is_causal=True), mha(x, is_causal=True))
    with pytest.raises(ValueError, match="divide"):
        GroupedQueryAttention(16, 4, n_kv_heads=3)
