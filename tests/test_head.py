"""The output head, the loss and the landmarks agree with torch and with their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.head import (
    LMHead,
    cross_entropy,
    log_softmax,
    logsumexp,
    next_token_loss,
    perplexity,
    uniform_loss,
    unigram_loss,
    unigram_probs,
)


def _logits(*shape, scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def test_head_is_a_linear_map_to_the_vocabulary():
    head = LMHead(d_model=6, vocab=11, bias=True)
    with torch.no_grad():
        head.bias.normal_()
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(head(x), F.linear(x, head.weight, head.bias))
    assert head(x).shape == (2, 3, 11)


def test_tied_head_shares_the_embedding_parameter():
    embedding = nn.Embedding(11, 6)
    head = LMHead(6, 11, tie_to=embedding)
    assert head.weight is embedding.weight and head.tied
    model = nn.ModuleDict({"embed": embedding, "head": head})
    assert sum(p.numel() for p in model.parameters()) == 11 * 6  # counted once

    # A gradient through the head reaches the embedding, and an update changes both.
    head(torch.randn(4, 6)).sum().backward()
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0
    with torch.no_grad():
        embedding.weight.add_(1.0)
    torch.testing.assert_close(head(torch.eye(6))[0], embedding.weight[:, 0])


def test_tied_head_rejects_a_mismatched_embedding():
    with pytest.raises(ValueError, match="shape"):
        LMHead(6, 11, tie_to=nn.Embedding(11, 5))
    with pytest.raises(TypeError, match="weight"):
        LMHead(6, 11, tie_to=nn.ReLU())
    with pytest.raises(ValueError, match="d_model"):
        LMHead(6, 11)(torch.randn(2, 5))


@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["ordinary", "huge logits"])
def test_log_softmax_and_logsumexp_match_torch(scale):
    x = _logits(3, 7, scale=scale)
    torch.testing.assert_close(logsumexp(x), torch.logsumexp(x, dim=-1))
    torch.testing.assert_close(log_softmax(x), torch.log_softmax(x, dim=-1))
    assert torch.isfinite(log_softmax(x)).all()


def test_logsumexp_of_an_all_masked_row_is_minus_infinity():
    x = torch.tensor([[float("-inf")] * 3, [0.0, float("-inf"), 0.0]])
    out = logsumexp(x)
    assert out[0] == float("-inf")
    assert math.isclose(out[1].item(), math.log(2), rel_tol=1e-6)


@pytest.mark.parametrize(
    ("scale", "ignore"),
    [(1.0, False), (30.0, False), (1e4, False), (1.0, True)],
    ids=["ordinary", "large", "huge logits", "with ignored positions"],
)
def test_cross_entropy_matches_torch_value_and_gradient(scale, ignore):
    logits = _logits(12, 9, scale=scale).requires_grad_()
    targets = torch.randint(0, 9, (12,), generator=torch.Generator().manual_seed(1))
    if ignore:
        targets[::3] = -100
    ours = cross_entropy(logits, targets)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    theirs = F.cross_entropy(logits, targets)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_cross_entropy_takes_batch_and_sequence_dimensions_and_a_custom_ignore_index():
    logits, targets = _logits(2, 5, 7), torch.randint(0, 7, (2, 5))
    targets[1, 3:] = 0
    expected = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), ignore_index=0)
    torch.testing.assert_close(cross_entropy(logits, targets, ignore_index=0), expected)


def test_cross_entropy_with_every_position_ignored_is_nan_like_torch():
    logits, targets = _logits(3, 4), torch.full((3,), -100)
    assert torch.isnan(cross_entropy(logits, targets))
    assert torch.isnan(F.cross_entropy(logits, targets))


def test_cross_entropy_rejects_bad_targets():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        cross_entropy(_logits(2, 4), torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="must agree"):
        cross_entropy(_logits(2, 4), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="LongTensor"):
        cross_entropy(_logits(2, 4), torch.tensor([1.0, 2.0]))


def test_next_token_loss_predicts_the_following_token():
    logits, ids = _logits(2, 6, 5), torch.randint(0, 5, (2, 6))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 5), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(next_token_loss(logits, ids), expected)


def test_a_uniform_guess_has_loss_log_vocab_and_perplexity_vocab():
    vocab = 65
    loss = cross_entropy(torch.zeros(10, vocab), torch.randint(0, vocab, (10,)))
    assert math.isclose(loss.item(), uniform_loss(vocab), rel_tol=1e-6)
    assert math.isclose(perplexity(loss), vocab, rel_tol=1e-5)
    assert perplexity(0.0) == 1.0


def test_unigram_loss_is_the_cross_entropy_of_the_count_distribution():
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])
    p = unigram_probs(ids, vocab=4)
    torch.testing.assert_close(p, torch.tensor([0.5, 0.375, 0.125, 0.0], dtype=torch.float64))
    logits = torch.log(p.clamp_min(1e-300)).expand(len(ids), 4)
    assert math.isclose(unigram_loss(ids, 4), cross_entropy(logits, ids).item(), rel_tol=1e-9)
    # Below the uniform landmark, above zero.
    assert 0 < unigram_loss(ids, 4) < uniform_loss(4)


def test_unigram_loss_on_other_text_is_smoothed_and_finite():
    train, held_out = torch.tensor([0, 0, 1]), torch.tensor([2, 0])
    p = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64) / 6
    expected = -(p[2].log() + p[0].log()).item() / 2
    assert math.isclose(unigram_loss(train, 3, eval_ids=held_out), expected, rel_tol=1e-9)
