"""The decoders match torch with copied weights, are causal, and cached generation is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.attention import causal_mask, padding_mask
from course_lib.decoder import (
    DecoderBlock,
    DecoderLayer,
    DecoderOnlyLM,
    EncoderDecoder,
    greedy_decode,
)
from course_lib.multihead import load_from_torch
from course_lib.sampling import KVCache, generate

D_MODEL, N_HEADS, D_FF = 16, 4, 24


@torch.no_grad()
def _load_decoder_layer(ours: DecoderLayer, theirs: nn.TransformerDecoderLayer) -> None:
    load_from_torch(ours.self_attn, theirs.self_attn)
    load_from_torch(ours.cross_attn, theirs.multihead_attn)
    for a, b in ((ours.ff.up, theirs.linear1), (ours.ff.down, theirs.linear2)):
        a.weight.copy_(b.weight)
        a.bias.copy_(b.bias)
    ours_norms = (ours.norm1, ours.norm2, ours.norm3)
    for a, b in zip(ours_norms, (theirs.norm1, theirs.norm2, theirs.norm3), strict=True):
        b.weight.uniform_(0.5, 1.5)  # norms that are not the identity, so that their roles matter
        b.bias.normal_(0, 0.1)
        a.weight.copy_(b.weight)
        a.bias.copy_(b.bias)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_decoder_layer_matches_torch_transformer_decoder_layer(norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(
        D_MODEL,
        N_HEADS,
        D_FF,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    )
    ours = DecoderLayer(D_MODEL, N_HEADS, D_FF, norm_first=norm_first).double()
    _load_decoder_layer(ours, theirs)
    x, memory = torch.randn(2, 5, D_MODEL).double(), torch.randn(2, 7, D_MODEL).double()
    memory_mask = padding_mask(torch.tensor([7, 3]), 7)  # (batch, 1, seq_src)
    expected = theirs(
        x, memory, tgt_mask=~causal_mask(5), memory_key_padding_mask=~memory_mask[:, 0]
    )
    torch.testing.assert_close(ours(x, memory, memory_mask=memory_mask), expected)


def test_cross_attention_weights_cover_only_the_real_source_positions():
    layer = DecoderLayer(D_MODEL, N_HEADS, D_FF)
    memory_mask = padding_mask(torch.tensor([6, 2]), 6)
    _, weights = layer(
        torch.randn(2, 4, D_MODEL),
        torch.randn(2, 6, D_MODEL),
        None,
        memory_mask,
        need_weights=True,
    )
    assert weights.shape == (2, N_HEADS, 4, 6)
    assert (weights[1, :, :, 2:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, N_HEADS, 4))


@pytest.mark.parametrize("kind", ["DecoderLayer", "DecoderBlock"])
def test_decoders_are_causal(kind):
    torch.manual_seed(0)
    x = torch.randn(2, 6, D_MODEL)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, D_MODEL)  # change only the last two positions
    if kind == "DecoderLayer":
        layer, memory = DecoderLayer(D_MODEL, N_HEADS, D_FF), torch.randn(2, 3, D_MODEL)
        out, out_changed = layer(x, memory), layer(changed, memory)
    else:
        layer = DecoderBlock(D_MODEL, N_HEADS, D_FF)
        out, out_changed = layer(x), layer(changed)
    torch.testing.assert_close(out[:, :4], out_changed[:, :4])
    assert not torch.allclose(out[:, 4:], out_changed[:, 4:])


def test_decoder_block_is_pre_norm_attention_then_feed_forward():
    torch.manual_seed(0)
    block = DecoderBlock(D_MODEL, N_HEADS, D_FF)
    x = torch.randn(2, 5, D_MODEL)
    h = x + block.self_attn(block.norm1(x), mask=causal_mask(5))
    torch.testing.assert_close(block(x), h + block.ff(block.norm2(h)))
    # An extra padding mask is combined with the causal one.
    pad = padding_mask(torch.tensor([5, 3]), 5)
    h = x + block.self_attn(block.norm1(x), mask=pad & causal_mask(5))
    torch.testing.assert_close(block(x, mask=pad), h + block.ff(block.norm2(h)))


def test_decoder_block_with_a_cache_equals_the_full_computation():
    torch.manual_seed(0)
    block = DecoderBlock(D_MODEL, N_HEADS, D_FF).eval()
    x = torch.randn(2, 7, D_MODEL)
    cache = KVCache()
    pieces = [block(x[:, :4], cache=cache)]  # a prompt of four positions, then one at a time
    pieces += [block(x[:, t : t + 1], cache=cache) for t in range(4, 7)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), block(x))
    assert cache.seq_len == 7


def _lm(seed=0):
    torch.manual_seed(seed)
    return DecoderOnlyLM(vocab=30, d_model=D_MODEL, n_heads=N_HEADS, n_layers=2, max_seq=40).eval()


def test_language_model_ties_its_head_to_the_embedding():
    model = _lm()
    assert model.head.weight is model.embed.weight
    assert DecoderOnlyLM(30, D_MODEL, N_HEADS, 1, tie_weights=False).head.weight is not None


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "top_k": 10}])
def test_generation_with_and_without_the_cache_gives_the_same_tokens(sampling):
    model, prompt = _lm(), torch.randint(0, 30, (3, 5))
    runs = [
        generate(
            model, prompt, 20, generator=torch.Generator().manual_seed(1), use_cache=c, **sampling
        )
        for c in (True, False)
    ]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (3, 25) and torch.equal(runs[0][:, :5], prompt)


def test_cached_logits_equal_the_logits_of_the_whole_sequence():
    model, ids = _lm(), torch.randint(0, 30, (2, 12))
    cache = KVCache()
    steps = [model(ids[:, :6], cache=cache)] + [
        model(ids[:, t : t + 1], cache=cache) for t in range(6, 12)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(ids))


def _seq2seq(seed=0):
    torch.manual_seed(seed)
    return EncoderDecoder(
        20, 22, d_model=D_MODEL, n_heads=N_HEADS, n_layers=2, max_seq=16, pad_id=0
    ).eval()


def test_teacher_forced_logits_equal_the_logits_of_step_by_step_decoding():
    model = _seq2seq()
    src, tgt = torch.randint(1, 20, (2, 6)), torch.randint(1, 22, (2, 5))
    full = model(src, tgt)
    memory, memory_mask = model.encode(src)
    for t in range(1, 6):
        step = model.decode(tgt[:, :t], memory, memory_mask)[:, -1]
        torch.testing.assert_close(step, full[:, t - 1])


def test_source_padding_does_not_change_the_target_logits():
    model = _seq2seq()
    src, tgt = torch.tensor([[4, 5, 6]]), torch.tensor([[1, 2, 3]])
    padded = torch.tensor([[4, 5, 6, 0, 0]])
    torch.testing.assert_close(model(padded, tgt), model(src, tgt))
    lengths = torch.tensor([3])
    torch.testing.assert_close(
        model(torch.tensor([[4, 5, 6, 9, 9]]), tgt, lengths), model(src, tgt)
    )


def test_greedy_decode_takes_the_argmax_and_stops_after_eos():
    model = _seq2seq()
    src = torch.randint(1, 20, (3, 6))
    out = greedy_decode(model, src, max_len=8, bos_id=1, eos_id=2)
    assert out[:, 0].tolist() == [1, 1, 1] and out.shape[1] <= 9
    memory, memory_mask = model.encode(src)
    for t in range(1, out.shape[1]):
        logits = model.decode(out[:, :t], memory, memory_mask)[:, -1]
        finished = (out[:, 1:t] == 2).any(dim=1)
        expected = torch.where(finished, torch.tensor(2), logits.argmax(-1))
        assert out[:, t].tolist() == expected.tolist()


def test_greedy_decode_stops_early_when_every_sequence_has_ended():
    model = _seq2seq()
    with torch.no_grad():  # make the end token always the most likely
        model.head.weight.zero_()
        model.head.weight[2] = 0.0
        model.head.bias = nn.Parameter(torch.zeros(22))
        model.head.bias.data[2] = 10.0
    out = greedy_decode(model, torch.randint(1, 20, (2, 4)), max_len=8, bos_id=1, eos_id=2)
    assert out.tolist() == [[1, 2], [1, 2]]
