"""Scaled dot-product attention, the masks that shape it, and a softmax that survives them.

Every query scores every key with a dot product, the scores are divided by the square root
of the key width, a softmax over the keys turns each row of scores into weights, and the
output of a query is the weighted sum of the values::

    weights = softmax(q @ k^T / sqrt(d_head))      # (..., seq_q, seq_k)
    output = weights @ v                           # (..., seq_q, d_v)

Masks are boolean and say where attention **may look**: ``True`` means the key is visible to
the query (the convention of ``torch.nn.functional.scaled_dot_product_attention``). A query
whose keys are all hidden gets zero weights and a zero output, with no NaN in the forward
pass or in the gradients.

>>> q = k = v = torch.eye(2).unsqueeze(0)  # (1, 2, 2)
>>> out, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(2))
>>> w[0, 0].tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["causal_mask", "padding_mask", "scaled_dot_product_attention", "softmax"]


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Return the softmax of ``x`` along ``dim``, computed without overflow.

    The largest value along ``dim`` is subtracted before exponentiating, which leaves the
    result unchanged (softmax ignores a shift) but keeps every exponent at most zero. A slice
    whose values are all ``-inf`` (a query that may look at nothing) gives zeros, not NaN,
    and its gradient is zero too.

    Args:
        x: scores of any shape; masked entries hold ``-inf``.
        dim: the dimension that sums to one.

    Returns:
        A tensor of the shape of ``x``, non-negative, summing to one along ``dim`` (or to
        zero where every entry was ``-inf``).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"softmax needs a floating-point tensor, got {_describe(x)}")

    # Shift by the largest entry; an all -inf slice has no finite maximum, so shift it by 0.
    shift = x.detach().amax(dim=dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    exp = torch.exp(x - shift)

    # Normalise; a slice that summed to zero stays zero instead of becoming 0 / 0.
    total = exp.sum(dim=dim, keepdim=True)
    total = torch.where(total > 0, total, torch.ones_like(total))
    return exp / total


def causal_mask(
    seq_q: int, seq_k: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Return the mask that lets each query see its own position and the ones before it.

    When ``seq_k`` is larger than ``seq_q`` the queries are taken to be the *last* ``seq_q``
    positions of the ``seq_k`` keys (the case of generation with a cache of earlier keys), so
    query ``i`` sees keys ``0 .. i + seq_k - seq_q``. With ``seq_q == seq_k`` this is the
    lower triangle including the diagonal. (``torch.nn.functional.scaled_dot_product_attention``
    with ``is_causal=True`` aligns the triangle to the top-left corner instead, which differs
    only when ``seq_q != seq_k``.)

    Args:
        seq_q: number of queries.
        seq_k: number of keys; defaults to ``seq_q``.
        device: where to build the mask.

    Returns:
        A bool tensor of shape (seq_q, seq_k), True where the query may attend.

    >>> causal_mask(3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    seq_k = seq_q if seq_k is None else seq_k
    for name, value in (("seq_q", seq_q), ("seq_k", seq_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")

    # Query i sits at absolute position i + (seq_k - seq_q) among the keys.
    query_pos = torch.arange(seq_q, device=device).unsqueeze(1) + (seq_k - seq_q)  # (seq_q, 1)
    key_pos = torch.arange(seq_k, device=device).unsqueeze(0)  # (1, seq_k)
    return key_pos <= query_pos


def padding_mask(lengths: torch.Tensor, seq: int) -> torch.Tensor:
    """Return the mask that hides the padding at the end of each sequence of a batch.

    Args:
        lengths: LongTensor of shape (batch,): how many positions of each sequence are real;
            each between 0 and ``seq``.
        seq: the padded length.

    Returns:
        A bool tensor of shape (batch, 1, seq), True for real keys. The middle dimension of
        size one broadcasts over the queries: combine it with a causal mask with ``&``.

    >>> padding_mask(torch.tensor([2, 3]), 3).int().tolist()
    [[[1, 1, 0]], [[1, 1, 1]]]
    """
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
        raise ValueError(
            f"lengths must be a 1-D tensor of shape (batch,), got {_describe(lengths)}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"seq must be a non-negative int, got {seq!r}")
    if len(lengths) and (lengths.min() < 0 or lengths.max() > seq):
        raise ValueError(f"lengths must lie between 0 and seq={seq}, got {lengths.tolist()}")

    positions = torch.arange(seq, device=lengths.device)  # (seq,)
    return (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1)  # (batch, 1, seq)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attend from each query to the keys and return the weighted sum of the values.

    Args:
        q: queries, shape (..., seq_q, d_head).
        k: keys, shape (..., seq_k, d_head).
        v: values, shape (..., seq_k, d_v).
        mask: bool, broadcastable to (..., seq_q, seq_k); True where the query may attend.
        dropout_p: probability of dropping an attention weight, used only when ``training``.
        training: whether to apply dropout.

    Returns:
        ``(output, weights)``: output of shape (..., seq_q, d_v) and the weights applied to
        the values, shape (..., seq_q, seq_k) (after dropout when it is active, as
        ``torch.nn.MultiheadAttention`` reports them). Rows with no visible key are zero.
    """
    _check_inputs(q, k, v, mask, dropout_p)
    d_head = q.shape[-1]

    # One score per (query, key) pair, scaled so that its spread does not grow with d_head.
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)  # (..., seq_q, seq_k)

    # Hidden keys get -inf, so the softmax gives them exactly zero weight.
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)

    # Dropout on the weights, then the weighted sum of the values.
    if training and dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return weights @ v, weights  # (..., seq_q, d_v), (..., seq_q, seq_k)


def _check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> None:
    """Raise a clear error when the inputs of attention do not fit together."""
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {_describe(tensor)}")
        if tensor.dim() < 2:
            raise ValueError(
                f"{name} needs at least 2 dimensions (seq, width), got {_describe(tensor)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"queries and keys must have the same width: q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"keys and values must have the same length: k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be a bool tensor (True = may attend), got {_describe(mask)}"
            )
        score_shape = (
            *torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]),
            q.shape[-2],
            k.shape[-2],
        )
        try:
            torch.broadcast_shapes(mask.shape, score_shape)
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                f"{score_shape} (..., seq_q, seq_k)"
            ) from None
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")


def _describe(value: object) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r:.60}"
