"""Temperature, top-k and top-p shape the next-token distribution as defined; draws are seeded."""

from __future__ import annotations

import pytest
import torch

from course_lib.sampling import (
    KVCache,
    filter_top_k,
    filter_top_p,
    generate,
    next_token_probs,
    sample_next,
)


def _logits(batch=3, vocab=12, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vocab, generator=g, dtype=torch.float64) * scale


def _nucleus_by_hand(probs: list[float], p: float) -> set[int]:
    """The smallest set of most likely tokens whose probability reaches p, one token at a time."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= p:
            break
    return kept


def test_temperature_divides_the_logits():
    logits = _logits()
    for t in (0.5, 1.0, 2.0):
        torch.testing.assert_close(next_token_probs(logits, t), torch.softmax(logits / t, -1))


def test_temperature_zero_is_greedy_without_a_division():
    logits = _logits()
    probs = next_token_probs(logits, temperature=0)
    assert torch.isfinite(probs).all()
    assert probs.argmax(-1).tolist() == logits.argmax(-1).tolist()
    assert probs.sum(-1).tolist() == [1.0] * 3 and (probs.max(-1).values == 1).all()
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert sample_next(logits, temperature=0, generator=g).tolist() == logits.argmax(-1).tolist()
    assert torch.equal(g.get_state(), state), "greedy decoding should draw no random number"


@pytest.mark.parametrize("k", [1, 3, 12, 50])
def test_top_k_keeps_the_k_most_likely_tokens(k):
    logits = _logits()
    probs = next_token_probs(logits, top_k=k)
    for row, lrow in zip(probs, logits, strict=True):
        kept = set(row.nonzero().flatten().tolist())
        assert kept == set(lrow.topk(min(k, 12)).indices.tolist())
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=torch.float64))


def test_top_k_keeps_every_token_tied_at_the_cut_off():
    logits = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    assert torch.isfinite(filter_top_k(logits, 2)).tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.95, 1.0])
def test_top_p_keeps_the_smallest_set_that_reaches_p(p):
    logits = _logits(batch=5, seed=3)
    probs = next_token_probs(logits, top_p=p)
    full = torch.softmax(logits, -1)
    for row, frow in zip(probs, full, strict=True):
        kept = set(row.nonzero().flatten().tolist())
        assert kept == _nucleus_by_hand(frow.tolist(), p)
        expected = torch.zeros_like(frow)
        index = torch.tensor(sorted(kept))
        expected[index] = frow[index] / frow[index].sum()
        torch.testing.assert_close(row, expected)


def test_top_p_always_keeps_the_most_likely_token():
    logits = torch.tensor([[5.0, 0.0, 0.0]])
    assert torch.isfinite(filter_top_p(logits, 1e-9)).tolist() == [[True, False, False]]


def test_temperature_then_top_k_then_top_p():
    logits = _logits(seed=5)
    t, k, p = 0.7, 5, 0.6
    step = filter_top_k(logits / t, k)
    expected = torch.softmax(filter_top_p(step, p), -1)
    torch.testing.assert_close(next_token_probs(logits, t, top_k=k, top_p=p), expected)


def test_a_seeded_generator_gives_the_same_tokens():
    logits = _logits(batch=4)
    seeded = [torch.Generator().manual_seed(7) for _ in range(2)]
    first = [sample_next(logits, 1.0, generator=g) for g in seeded]
    assert torch.equal(first[0], first[1])


def test_samples_follow_the_distribution():
    logits = _logits(batch=1, vocab=6, seed=2, scale=1.0).float()
    probs = next_token_probs(logits, temperature=1.3, top_k=4).squeeze(0)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 1.3, top_k=4, generator=g) for _ in range(4000)])
    freq = torch.bincount(draws.flatten(), minlength=6).float() / 4000
    assert (freq[probs == 0] == 0).all()
    # Four standard errors of a frequency estimated from 4000 draws.
    assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / 4000).sqrt() + 1e-6).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_knobs_raise_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        next_token_probs(_logits(), **kwargs)


def test_cache_appends_new_positions_per_layer():
    cache = KVCache()
    assert cache.seq_len == 0 and len(cache) == 0
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 1, 5)
    for layer in range(2):
        k, v = cache.update(layer, a + layer, -a)
        torch.testing.assert_close(k, a + layer)
    k, v = cache.update(0, b, -b)
    torch.testing.assert_close(k, torch.cat([a, b], dim=2))
    torch.testing.assert_close(v, torch.cat([-a, -b], dim=2))
    assert cache.seq_len == 5 and len(cache) == 2
    assert cache.keys[1].shape[2] == 4  # layer 1 has not seen the new position yet


def test_cache_rejects_layers_out_of_order_and_mismatched_shapes():
    cache = KVCache()
    with pytest.raises(ValueError, match="out of order"):
        cache.update(1, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="shape"):
        cache.update(0, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 2, 2))


class _CountingModel(torch.nn.Module):
    """A model that predicts token (previous + 1) mod vocab, and counts positions read."""

    max_seq = 32

    def __init__(self, vocab=7):
        super().__init__()
        self.vocab, self.read = vocab, 0

    def forward(self, ids, cache=None):
        self.read += ids.shape[1]
        return torch.nn.functional.one_hot((ids + 1) % self.vocab, self.vocab).float() * 10


def test_generate_reads_each_position_once_with_a_cache():
    with_cache, without = _CountingModel(), _CountingModel()
    prompt = torch.tensor([[0, 1], [4, 5]])
    out = generate(with_cache, prompt, 5, temperature=0)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 6], [4, 5, 6, 0, 1, 2, 3]]
    assert torch.equal(out, generate(without, prompt, 5, temperature=0, use_cache=False))
    assert with_cache.read == 2 + 4 and without.read == sum(range(2, 7))


def test_generate_with_a_cache_refuses_to_overflow_the_context():
    with pytest.raises(ValueError, match="max_seq"):
        generate(_CountingModel(), torch.zeros(1, 30, dtype=torch.long), 5)
