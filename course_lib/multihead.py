"""Multi-head attention: several attention heads side by side on slices of the model width.

The queries, keys and values are projected from the input with one ``d_model x d_model``
matrix each, the projected width is cut into ``n_heads`` slices of ``d_head`` channels (one
per head), every head attends on its own slice, and the head outputs are put back side by
side and mixed by an output projection::

    q, k, v = split_heads(x @ W_q), split_heads(x @ W_k), split_heads(x @ W_v)
    out = merge_heads(attention(q, k, v)) @ W_o

Head ``h`` owns channels ``h * d_head .. (h + 1) * d_head - 1`` of the projected width,
exactly as in ``torch.nn.MultiheadAttention``, so that module's weights load into this one
(:func:`load_from_torch`).

Masks are boolean, True where a query may look (see ``course_lib.attention``).

>>> mha = MultiHeadAttention(d_model=8, n_heads=2)
>>> mha(torch.randn(3, 5, 8)).shape
torch.Size([3, 5, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import causal_mask, scaled_dot_product_attention

__all__ = [
    "GroupedQueryAttention",
    "MultiHeadAttention",
    "attention_head_by_head",
    "load_from_torch",
    "merge_heads",
    "repeat_kv_heads",
    "split_heads",
]


def _check_heads(d_model: int, n_heads: int) -> int:
    """Return ``d_head``, or raise when ``d_model`` does not split into ``n_heads`` heads."""
    for name, value in (("d_model", d_model), ("n_heads", n_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_model % n_heads:
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}: every head needs the "
            "same width d_head = d_model // n_heads"
        )
    return d_model // n_heads


def _check_tensor(name: str, x: torch.Tensor, dims: int, shape_names: str) -> None:
    """Raise a clear error unless ``x`` is a tensor with ``dims`` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_names}, got {type(x)}")
    if x.dim() != dims:
        raise ValueError(f"{name} must have shape {shape_names}, got {tuple(x.shape)}")


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Cut the last dimension into ``n_heads`` slices and move the heads before the positions.

    Head ``h`` gets channels ``h * d_head .. (h + 1) * d_head - 1``.

    Args:
        x: shape (batch, seq, d_model).
        n_heads: number of heads; must divide ``d_model``.

    Returns:
        Shape (batch, n_heads, seq, d_head) with ``d_head = d_model // n_heads`` (a view of
        ``x`` when possible).
    """
    _check_tensor("x", x, 3, "(batch, seq, d_model)")
    batch, seq, d_model = x.shape
    d_head = _check_heads(d_model, n_heads)
    x = x.view(batch, seq, n_heads, d_head)  # (batch, seq, n_heads, d_head)
    return x.transpose(1, 2)  # (batch, n_heads, seq, d_head)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Undo :func:`split_heads`: put the heads' channels side by side again.

    Args:
        x: shape (batch, n_heads, seq, d_head).

    Returns:
        Shape (batch, seq, d_model) with ``d_model = n_heads * d_head``; head ``h`` fills
        channels ``h * d_head .. (h + 1) * d_head - 1``.
    """
    _check_tensor("x", x, 4, "(batch, n_heads, seq, d_head)")
    batch, n_heads, seq, d_head = x.shape
    x = x.transpose(1, 2)  # (batch, seq, n_heads, d_head)
    return x.reshape(batch, seq, n_heads * d_head)  # (batch, seq, d_model)


def _head_mask(mask: torch.Tensor | None, batch: int, seq_q: int, seq_k: int):
    """Return ``mask`` shaped to broadcast over (batch, n_heads, seq_q, seq_k).

    Accepted shapes: (seq_q, seq_k) for every sequence alike (a causal mask), (batch, seq_q or
    1, seq_k) per sequence (a padding mask) and (batch or 1, n_heads or 1, seq_q or 1, seq_k).
    A 3-D mask gets a head axis of size one, so a padding mask is not read as one per head.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            "mask must be a bool tensor (True = may attend), got "
            + (f"dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__)
        )
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)  # (batch, 1, seq_q or 1, seq_k)
    elif mask.dim() not in (2, 4):
        raise ValueError(
            f"mask must have shape (seq_q, seq_k), (batch, seq_q, seq_k) or "
            f"(batch, n_heads, seq_q, seq_k), got {tuple(mask.shape)}"
        )
    if (
        mask.shape[-1] != seq_k
        or mask.shape[-2] not in (1, seq_q)
        or (mask.dim() == 4 and mask.shape[0] not in (1, batch))
    ):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit batch={batch}, seq_q={seq_q}, "
            f"seq_k={seq_k}"
        )
    return mask


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query, key, value and output projections.

    Args:
        d_model: width of the inputs and outputs.
        n_heads: number of heads; must divide ``d_model``.
        bias: whether the four projections have a bias.
        dropout: probability of dropping an attention weight while training.

    Shape:
        query (batch, seq_q, d_model); key and value (batch, seq_k, d_model); output
        (batch, seq_q, d_model); weights (batch, n_heads, seq_q, seq_k).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.d_head = _check_heads(d_model, n_heads)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.d_model, self.n_heads, self.dropout = d_model, n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
        is_causal: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from every query position to the key/value positions.

        Args:
            query: (batch, seq_q, d_model).
            key: (batch, seq_k, d_model); defaults to ``query`` (self-attention).
            value: (batch, seq_k, d_model); defaults to ``key``.
            mask: bool, True where a query may look: (seq_q, seq_k), (batch, seq_q or 1,
                seq_k) or (batch, n_heads, seq_q, seq_k).
            need_weights: also return the attention weights of every head.
            is_causal: also hide the keys after each query (combined with ``mask``). For
                self-attention prefer it to an explicit causal mask: without weights and
                without another mask, torch's fused kernels then skip the hidden half.

        Returns:
            The output (batch, seq_q, d_model), or ``(output, weights)`` with weights
            (batch, n_heads, seq_q, seq_k) when ``need_weights``. A query with no visible
            key gets a zero attention output (only the output projection's bias remains).
        """
        key = query if key is None else key
        value = key if value is None else value
        for name, x in (("query", query), ("key", key), ("value", value)):
            _check_tensor(name, x, 3, "(batch, seq, d_model)")
        batch, seq_q, _ = query.shape
        seq_k = key.shape[1]
        mask = _head_mask(mask, batch, seq_q, seq_k)

        # Project, then give every head its own slice of the width.
        q = split_heads(self.q_proj(query), self.n_heads)  # (batch, n_heads, seq_q, d_head)
        k = split_heads(self.k_proj(key), self.n_heads)  # (batch, n_heads, seq_k, d_head)
        v = split_heads(self.v_proj(value), self.n_heads)  # (batch, n_heads, seq_k, d_head)

        # Attend within each head, put the heads side by side again and mix them.
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            if is_causal:
                causal = causal_mask(seq_q, seq_k, device=query.device)
                mask = causal if mask is None else mask & causal
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p, self.training)
        else:
            out, weights = _fast_attention(q, k, v, mask, dropout_p, is_causal), None
        out = self.out_proj(merge_heads(out))  # (batch, seq_q, d_model)
        return (out, weights) if need_weights else out

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}"


def _fast_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
) -> torch.Tensor:
    """Attention through torch's fused kernel, with this course's mask semantics.

    ``torch.nn.functional.scaled_dot_product_attention`` reads a bool mask as "True = may
    attend", like this course, but its causal triangle is aligned to the top-left corner and
    some of its kernels return NaN for a query with no visible key. So the causal mask is built
    here unless the square case lets the kernel do it, and a query with no visible key is let
    see every key (which keeps the kernel finite) and then has its output set to zero, which
    also sends zero gradient through it.

    Shape: q (batch, n_heads, seq_q, d_head), k and v (batch, n_heads, seq_k, d_head) ->
    (batch, n_heads, seq_q, d_head).
    """
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    if is_causal and (mask is not None or seq_q != seq_k):
        causal = causal_mask(seq_q, seq_k, device=q.device)
        mask = causal if mask is None else mask & causal
        is_causal = False
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)

    # Rows that see nothing attend everywhere inside the kernel and are zeroed afterwards.
    blind = ~mask.any(dim=-1, keepdim=True)  # (..., seq_q, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | blind, dropout_p=dropout_p)
    return out.masked_fill(blind, 0.0)


def attention_head_by_head(
    module: MultiHeadAttention,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compute ``module``'s output one head at a time, with no reshape of the activations.

    Head ``h`` uses rows ``h * d_head .. (h + 1) * d_head - 1`` of the query, key and value
    projection weights; its output is computed with plain single-head attention, the head
    outputs are concatenated along the channels and the output projection is applied. A
    correct multi-head module gives the same result; one that splits or merges the heads
    with a reshape that scrambles channels and positions does not.

    Shape: as :meth:`MultiHeadAttention.forward` (without weights).
    """
    key = query if key is None else key
    value = key if value is None else value
    batch, seq_q, _ = query.shape
    mask = _head_mask(mask, batch, seq_q, key.shape[1])

    # One head at a time: slice that head's rows of each projection (and its mask).
    outputs = []
    for h in range(module.n_heads):
        rows = slice(h * module.d_head, (h + 1) * module.d_head)
        projected = []
        for proj, x in ((module.q_proj, query), (module.k_proj, key), (module.v_proj, value)):
            bias = None if proj.bias is None else proj.bias[rows]
            projected.append(F.linear(x, proj.weight[rows], bias))  # (batch, seq, d_head)
        head_mask = mask
        if mask is not None and mask.dim() == 4:
            head_mask = mask[:, h if mask.shape[1] > 1 else 0]  # (batch, seq_q or 1, seq_k)
        out, _ = scaled_dot_product_attention(*projected, mask=head_mask)  # (batch, seq_q, d_head)
        outputs.append(out)
    return module.out_proj(torch.cat(outputs, dim=-1))  # (batch, seq_q, d_model)


@torch.no_grad()
def load_from_torch(module: MultiHeadAttention, torch_mha: nn.MultiheadAttention) -> None:
    """Copy the weights of a ``torch.nn.MultiheadAttention`` into ``module`` in place.

    torch keeps the three input projections stacked in one ``in_proj_weight`` of shape
    (3 * d_model, d_model), queries first, then keys, then values (and ``in_proj_bias`` the
    same way); each block is an ``nn.Linear`` weight (out_features, in_features), so it is
    copied as it is. Afterwards ``module(q, k, v, mask)`` equals
    ``torch_mha(q, k, v, attn_mask=~mask)[0]`` for a ``batch_first`` torch module.

    Raises:
        ValueError: when the sizes, the biases or the layout of the two modules differ.
    """
    if not isinstance(torch_mha, nn.MultiheadAttention):
        raise TypeError(f"torch_mha must be a torch.nn.MultiheadAttention, got {type(torch_mha)}")
    if not torch_mha.batch_first:
        raise ValueError("torch_mha must be built with batch_first=True, as this course's module")
    if (torch_mha.embed_dim, torch_mha.num_heads) != (module.d_model, module.n_heads):
        raise ValueError(
            f"sizes differ: torch module has embed_dim={torch_mha.embed_dim}, "
            f"num_heads={torch_mha.num_heads}; this module d_model={module.d_model}, "
            f"n_heads={module.n_heads}"
        )
    if (
        not torch_mha._qkv_same_embed_dim
        or torch_mha.bias_k is not None
        or torch_mha.add_zero_attn
    ):
        raise ValueError("only torch modules without kdim/vdim, add_bias_kv or add_zero_attn load")
    torch_bias = torch_mha.in_proj_bias is not None
    if torch_bias != (module.q_proj.bias is not None):
        raise ValueError(f"bias differs: torch module bias={torch_bias}, this module the opposite")

    # The stacked input projection holds the query, key and value blocks in that order.
    projections = (module.q_proj, module.k_proj, module.v_proj)
    weights = torch_mha.in_proj_weight.chunk(3, dim=0)  # 3 x (d_model, d_model)
    biases = torch_mha.in_proj_bias.chunk(3) if torch_bias else (None, None, None)
    for proj, weight, bias in zip(projections, weights, biases, strict=True):
        proj.weight.copy_(weight)
        if bias is not None:
            proj.bias.copy_(bias)
    module.out_proj.weight.copy_(torch_mha.out_proj.weight)
    if torch_bias:
        module.out_proj.bias.copy_(torch_mha.out_proj.bias)


def repeat_kv_heads(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat every key/value head ``n_rep`` times, next to itself.

    Head ``g`` of the input becomes heads ``g * n_rep .. (g + 1) * n_rep - 1`` of the output,
    so query heads in the same group share one key/value head.

    Shape: (batch, n_kv_heads, seq, d_head) -> (batch, n_kv_heads * n_rep, seq, d_head).
    """
    _check_tensor("x", x, 4, "(batch, n_kv_heads, seq, d_head)")
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep must be a positive int, got {n_rep!r}")
    return x.repeat_interleave(n_rep, dim=1)  # (batch, n_kv_heads * n_rep, seq, d_head)


class GroupedQueryAttention(nn.Module):
    """Attention where groups of query heads share one key/value head.

    With ``n_kv_heads == n_heads`` this is multi-head attention; with ``n_kv_heads == 1`` it
    is multi-query attention. Fewer key/value heads shrink the key and value projections and,
    at generation time, the cache of past keys and values by ``n_heads / n_kv_heads``.

    Args:
        d_model: width of the inputs and outputs.
        n_heads: number of query heads; must divide ``d_model``.
        n_kv_heads: number of key/value heads; must divide ``n_heads``.
        bias: whether the projections have a bias.

    Shape: as :class:`MultiHeadAttention` (forward takes the same arguments, without weights).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, bias: bool = True):
        super().__init__()
        self.d_head = _check_heads(d_model, n_heads)
        if isinstance(n_kv_heads, bool) or not isinstance(n_kv_heads, int) or n_kv_heads < 1:
            raise ValueError(f"n_kv_heads must be a positive int, got {n_kv_heads!r}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend as :meth:`MultiHeadAttention.forward`; returns (batch, seq_q, d_model)."""
        key = query if key is None else key
        value = key if value is None else value
        for name, x in (("query", query), ("key", key), ("value", value)):
            _check_tensor(name, x, 3, "(batch, seq, d_model)")
        batch, seq_q, _ = query.shape
        mask = _head_mask(mask, batch, seq_q, key.shape[1])

        # Fewer key/value heads, each repeated for its group of query heads.
        n_kv, n_rep = self.n_kv_heads, self.n_heads // self.n_kv_heads
        q = split_heads(self.q_proj(query), self.n_heads)  # (batch, n_heads, seq_q, d_head)
        k = split_heads(self.k_proj(key), n_kv)  # (batch, n_kv_heads, seq_k, d_head)
        v = split_heads(self.v_proj(value), n_kv)  # (batch, n_kv_heads, seq_k, d_head)
        k = repeat_kv_heads(k, n_rep)  # (batch, n_heads, seq_k, d_head)
        v = repeat_kv_heads(v, n_rep)  # (batch, n_heads, seq_k, d_head)

        out = _fast_attention(q, k, v, mask, 0.0, is_causal)  # (batch, n_heads, seq_q, d_head)
        return self.out_proj(merge_heads(out))  # (batch, seq_q, d_model)
