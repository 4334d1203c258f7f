"""The output head of a language model, its loss, and the landmarks that put a loss in context.

The last hidden state of each position, a vector of width ``d_model``, becomes one score per
token of the vocabulary (the **logits**) through a linear map; a softmax turns the logits into a
probability distribution over the next token::

    logits = h @ W^T (+ b)          # (..., vocab), W of shape (vocab, d_model)
    probs = softmax(logits)         # (..., vocab), sums to one

With **weight tying** ``W`` is the token embedding's own matrix, so the same vector represents a
token going in and scores it coming out, and the model saves ``vocab * d_model`` parameters.

The model is trained with the **cross-entropy** of the true next token, ``-log p(target)``,
averaged over positions. It is computed from the log-softmax, written with the log-sum-exp
trick so that large logits never overflow::

    log_softmax(x)_i = x_i - logsumexp(x)
    logsumexp(x) = m + log(sum_j exp(x_j - m)),  with m = max(x)

**Perplexity** is ``exp(loss)``: the number of tokens the model is, on average, as unsure as a
uniform choice among. Two landmarks say what a loss means: a uniform guess over ``vocab``
tokens scores ``log(vocab)`` (:func:`uniform_loss`), and a model that knows only how often each
token occurs scores the entropy of the unigram distribution (:func:`unigram_loss`).

>>> head = LMHead(d_model=4, vocab=10)
>>> head(torch.zeros(2, 3, 4)).shape
torch.Size([2, 3, 10])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # only for the type hint; the head works with any module holding a weight
    from course_lib.embedding import Embedding

__all__ = [
    "LMHead",
    "cross_entropy",
    "log_softmax",
    "logsumexp",
    "next_token_loss",
    "perplexity",
    "uniform_loss",
    "unigram_loss",
    "unigram_probs",
]


class LMHead(nn.Module):
    """Linear map from the hidden states to one logit per token of the vocabulary.

    Args:
        d_model: width of the hidden states.
        vocab: number of tokens in the vocabulary.
        tie_to: a token embedding (anything with a ``weight`` parameter of shape
            (vocab, d_model)) whose matrix the head shares instead of owning its own. The two
            modules then hold the *same* ``nn.Parameter``: a gradient step on one changes both.
        bias: whether to add a learned bias per token (off by default, as in GPT-2).

    Shape:
        forward: (..., d_model) -> (..., vocab).
    """

    def __init__(
        self,
        d_model: int,
        vocab: int,
        tie_to: Embedding | nn.Module | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("vocab", vocab)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.d_model, self.vocab = d_model, vocab
        self._tied = tie_to is not None

        # Tied: register the embedding's own Parameter, so both modules share one tensor.
        if tie_to is not None:
            weight = getattr(tie_to, "weight", None)
            if not isinstance(weight, nn.Parameter):
                raise TypeError(
                    "tie_to must be a module with a 'weight' parameter, got "
                    f"{type(tie_to).__name__}"
                )
            if tuple(weight.shape) != (vocab, d_model):
                raise ValueError(
                    f"tie_to.weight has shape {tuple(weight.shape)}, expected (vocab, d_model) = "
                    f"({vocab}, {d_model})"
                )
            self.weight = weight
        else:
            # Untied: the initialisation of nn.Linear, uniform in +-1/sqrt(d_model).
            bound = 1.0 / math.sqrt(d_model)
            self.weight = nn.Parameter(torch.empty(vocab, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(vocab)) if bias else None

    @property
    def tied(self) -> bool:
        """Whether the weight is shared with an embedding (set at construction)."""
        return self._tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of every position: ``x @ weight^T (+ bias)``."""
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"expected hidden states of width d_model={self.d_model}, got shape "
                f"{tuple(x.shape)}"
            )
        return F.linear(x, self.weight, self.bias)  # (..., vocab)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, vocab={self.vocab}, bias={self.bias is not None}"


def logsumexp(x: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Return ``log(sum(exp(x)))`` along ``dim`` without overflow.

    The largest entry ``m`` is factored out: ``m + log(sum(exp(x - m)))``, so every exponent
    is at most zero. A slice of all ``-inf`` gives ``-inf`` (the log of an empty sum).
    """
    m = x.detach().amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    out = m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))
    return out if keepdim else out.squeeze(dim)


def log_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Return the log-probabilities ``logits - logsumexp(logits)`` along ``dim``."""
    return logits - logsumexp(logits, dim=dim, keepdim=True)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Return the mean of ``-log softmax(logits)[target]`` over the positions not ignored.

    Matches ``torch.nn.functional.cross_entropy(logits, targets, ignore_index=...)``: positions
    whose target equals ``ignore_index`` count neither in the sum nor in the number of
    positions. When every position is ignored the mean of nothing is NaN, as in torch.

    Args:
        logits: raw scores, shape (N, vocab) or (..., vocab) (flattened to (N, vocab)).
        targets: LongTensor of the true token ids, shape (N,) or (...) matching ``logits``.
        ignore_index: target value of positions to leave out (padding).

    Returns:
        A scalar tensor.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.long:
        raise TypeError(f"targets must be a LongTensor, got {getattr(targets, 'dtype', targets)}")
    if tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(
            f"logits (..., vocab) and targets (...) must agree: logits {tuple(logits.shape)}, "
            f"targets {tuple(targets.shape)}"
        )
    vocab = logits.shape[-1]
    logits, targets = logits.reshape(-1, vocab), targets.reshape(-1)  # (N, vocab), (N,)

    # Which positions count, and are their targets real token ids?
    keep = targets != ignore_index  # (N,)
    bad = keep & ((targets < 0) | (targets >= vocab))
    if bad.any():
        raise ValueError(
            f"target {targets[bad][0].item()} is outside the vocabulary [0, {vocab}) and is not "
            f"ignore_index={ignore_index}"
        )

    # Log-probability of each target; ignored positions read index 0, then are dropped.
    log_probs = log_softmax(logits, dim=-1)  # (N, vocab)
    safe = torch.where(keep, targets, torch.zeros_like(targets))  # (N,)
    picked = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (N,)
    return -(picked * keep).sum() / keep.sum()


def next_token_loss(
    logits: torch.Tensor, ids: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Return the language-modelling loss: position ``t`` predicts the token at ``t + 1``.

    Args:
        logits: the model's output on ``ids``, shape (batch, seq, vocab).
        ids: the token ids the model read, shape (batch, seq).
        ignore_index: target value to leave out (padding).

    Returns:
        The cross-entropy of ``logits[:, :-1]`` against ``ids[:, 1:]``: the last position has
        nothing to predict, the first token is never predicted.
    """
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(ids.shape):
        raise ValueError(
            f"expected logits (batch, seq, vocab) and ids (batch, seq), got {tuple(logits.shape)} "
            f"and {tuple(ids.shape)}"
        )
    return cross_entropy(logits[:, :-1], ids[:, 1:], ignore_index=ignore_index)


def perplexity(loss: float | torch.Tensor) -> float:
    """Return ``exp(loss)`` for a mean cross-entropy in nats.

    A perplexity of ``k`` means the model is as unsure, on average, as a uniform choice
    among ``k`` tokens.
    """
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return math.exp(value)


def uniform_loss(vocab: int) -> float:
    """Return the loss of a uniform guess over ``vocab`` tokens: ``log(vocab)``."""
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"vocab must be a positive int, got {vocab!r}")
    return math.log(vocab)


def unigram_probs(ids: torch.Tensor, vocab: int, smoothing: float = 0.0) -> torch.Tensor:
    """Return how often each token occurs in ``ids``, as a distribution of shape (vocab,).

    Args:
        ids: token ids of any shape.
        vocab: vocabulary size.
        smoothing: a count added to every token (1.0 is Laplace smoothing), so that tokens never
            seen get a small probability instead of zero.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be non-negative, got {smoothing!r}")
    counts = torch.bincount(ids.reshape(-1).long().cpu(), minlength=vocab).double()
    if counts.numel() > vocab:
        raise ValueError(f"ids hold token {counts.numel() - 1}, outside the vocabulary of {vocab}")
    counts = counts + smoothing
    return counts / counts.sum()


def unigram_loss(ids: torch.Tensor, vocab: int, eval_ids: torch.Tensor | None = None) -> float:
    """Return the loss of predicting every token from the unigram distribution of ``ids``.

    Without ``eval_ids`` this is the entropy of the distribution, the best loss of any model
    that ignores the context on the text it was counted on. With ``eval_ids`` the counts are
    smoothed by one (Laplace) and the loss is measured on ``eval_ids``.
    """
    if eval_ids is None:
        p = unigram_probs(ids, vocab)
        nonzero = p[p > 0]
        return float(-(nonzero * nonzero.log()).sum())
    p = unigram_probs(ids, vocab, smoothing=1.0)
    return float(-p.log()[eval_ids.reshape(-1).long().cpu()].mean())
