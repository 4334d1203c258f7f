"""Token embeddings: one trained vector per token id.

An embedding layer is a matrix ``weight`` of shape (vocab, d_model) whose row ``t`` is the
vector of token ``t``. Looking up rows is the same as multiplying one-hot vectors by the
matrix (see :func:`one_hot_embed`), only without building the one-hot vectors and without
the multiplications by zero.

>>> emb = Embedding(vocab=5, d_model=3, padding_idx=0)
>>> emb(torch.tensor([[0, 4]])).shape
torch.Size([1, 2, 3])
>>> emb.weight[0].tolist()
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Embedding", "nearest_neighbours", "one_hot_embed"]


def _check_ids(ids: torch.Tensor, vocab: int) -> None:
    """Raise a clear error unless ``ids`` is an integer tensor of ids below ``vocab``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a LongTensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"ids must hold integers, got dtype {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(
            f"ids must lie in [0, {vocab}) for a vocabulary of {vocab}, "
            f"got values from {ids.min().item()} to {ids.max().item()}"
        )


class Embedding(nn.Module):
    """A lookup table from token ids to vectors of width ``d_model``.

    Args:
        vocab: number of token ids.
        d_model: width of each vector.
        padding_idx: an id that stands for "no token" (filler at the end of short
            sequences). Its row starts at zero, its output is always zero and it receives no
            gradient, so it stays zero through training.

    The weights start as N(0, 1), like ``torch.nn.Embedding``: each vector has a norm of
    about ``sqrt(d_model)``. (Models such as GPT-2 use a smaller scale, N(0, 0.02^2), and the
    original transformer multiplies the embeddings by ``sqrt(d_model)``; the model that uses
    the layer decides.)

    Shape:
        forward: ids (...) -> (..., d_model)
    """

    def __init__(self, vocab: int, d_model: int, padding_idx: int | None = None) -> None:
        super().__init__()
        for name, value in (("vocab", vocab), ("d_model", d_model)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
                raise TypeError(f"padding_idx must be an int or None, got {padding_idx!r}")
            if not -vocab <= padding_idx < vocab:
                raise ValueError(f"padding_idx must lie in [-{vocab}, {vocab}), got {padding_idx}")
            padding_idx %= vocab  # a negative index counts from the end, as in torch
        self.vocab, self.d_model, self.padding_idx = vocab, d_model, padding_idx

        # One N(0, 1) row per token; the padding row starts at zero.
        self.weight = nn.Parameter(torch.randn(vocab, d_model))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _check_ids(ids, self.vocab)
        out = self.weight[ids]  # (..., d_model)

        # Zero the padding positions; the multiplication by zero also stops their gradient,
        # so the padding row never changes.
        if self.padding_idx is not None:
            keep = (ids != self.padding_idx).unsqueeze(-1)  # (..., 1)
            out = out * keep.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        extra = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"vocab={self.vocab}, d_model={self.d_model}{extra}"


def one_hot_embed(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Embed ``ids`` the long way: one-hot vectors times the embedding matrix.

    Equal to ``weight[ids]``, but it builds a (..., vocab) matrix of zeros and ones and
    spends ``vocab * d_model`` multiply-adds per token, most of them by zero: it exists to
    show why a lookup *is* a linear layer.

    Args:
        ids: LongTensor of any shape (...), values in [0, vocab).
        weight: embedding matrix of shape (vocab, d_model).

    Returns:
        A tensor of shape (..., d_model) and the dtype of ``weight``.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError("weight must be a tensor of shape (vocab, d_model)")
    _check_ids(ids, weight.shape[0])
    one_hot = F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype)  # (..., vocab)
    return one_hot @ weight  # (..., d_model)


def nearest_neighbours(weight: torch.Tensor, index: int, k: int) -> list[int]:
    """Return the ``k`` rows of ``weight`` most similar to row ``index`` by cosine similarity.

    The row itself is left out. Ties are broken by the smaller row index.

    Args:
        weight: embedding matrix of shape (vocab, d_model).
        index: the row to find neighbours of.
        k: how many neighbours, at most ``vocab - 1``.

    Returns:
        A list of ``k`` row indices, most similar first.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError("weight must be a tensor of shape (vocab, d_model)")
    vocab = weight.shape[0]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < vocab:
        raise ValueError(f"index must be an int in [0, {vocab}), got {index!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < vocab:
        raise ValueError(f"k must be an int in [0, {vocab - 1}], got {k!r}")

    # Cosine similarity = dot product of unit vectors; the row itself must not count.
    unit = F.normalize(weight.detach().double(), dim=-1)  # (vocab, d_model)
    similarity = unit @ unit[index]  # (vocab,)
    similarity[index] = float("-inf")
    order = torch.sort(similarity, descending=True, stable=True).indices
    return order[:k].tolist()
