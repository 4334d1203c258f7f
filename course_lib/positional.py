"""Ways to tell a transformer where each token sits in the sequence.

Attention compares every query with every key and never looks at their positions, so a
model needs the positions put into its inputs or into its scores:

- ``sinusoidal_encoding`` and ``SinusoidalPositionalEncoding``: fixed sines and cosines added
  to the embeddings (the original transformer).
- ``LearnedPositionalEmbedding``: one trained vector per position, added to the embeddings.
- ``rotary_angles`` and ``apply_rotary``: rotary position embedding (RoPE), which rotates
  queries and keys so that their dot product depends on the distance between positions.
- ``alibi_slopes`` and ``alibi_bias``: ALiBi, a penalty on the attention scores that grows
  with the distance.

Channel layout, the same for sinusoids and rotations: channels ``2i`` and ``2i + 1`` belong
together (interleaved pairs), and pair ``i`` turns at the angular frequency
``base ** (-2i / width)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "alibi_bias",
    "alibi_slopes",
    "apply_rotary",
    "rotary_angles",
    "sinusoidal_encoding",
]


def _check_size(name: str, value: object, *, even: bool = False, minimum: int = 1) -> None:
    """Raise a clear error unless ``value`` is an int of at least ``minimum`` (and even)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if even and value % 2:
        raise ValueError(
            f"{name} must be even: channels come in (sin, cos) or rotation pairs, got {value}"
        )


def _check_base(base: float) -> None:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
        raise ValueError(f"base must be a number greater than 1, got {base!r}")


def _angles(positions: torch.Tensor, width: int, base: float) -> torch.Tensor:
    """The angle of every (position, channel pair): ``position * base ** (-2i / width)``.

    Computed in float64 (float32 where the device has no float64) so that the angles of far
    positions stay accurate; the caller casts the sines and cosines.

    Shape: positions (...,) -> angles (..., width // 2).
    """
    dtype = torch.float32 if positions.device.type == "mps" else torch.float64
    two_i = torch.arange(0, width, 2, dtype=dtype, device=positions.device)  # (width // 2,)
    inv_freq = base ** (-two_i / width)  # (width // 2,)
    return positions.to(dtype).unsqueeze(-1) * inv_freq  # (..., width // 2)


# ----------------------------------------------------------------------------------------------
# Sinusoidal encoding (added to the embeddings)
# ----------------------------------------------------------------------------------------------


def sinusoidal_encoding(seq: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """Return the sinusoidal position encoding of the original transformer.

    For position ``pos`` and channel pair ``i`` (``0 <= i < d_model / 2``)::

        encoding[pos, 2i]     = sin(pos / base ** (2i / d_model))
        encoding[pos, 2i + 1] = cos(pos / base ** (2i / d_model))

    Sines sit in the even channels and cosines in the odd ones, interleaved (not one block of
    sines followed by one block of cosines).

    Args:
        seq: number of positions (at least 1).
        d_model: width of the encoding; must be even, since channels come in (sin, cos)
            pairs: an odd ``d_model`` raises ``ValueError``.
        base: the longest wavelength is ``2 * pi * base``.

    Returns:
        A float32 tensor of shape (seq, d_model), every value in [-1, 1].

    >>> sinusoidal_encoding(2, 4)[1, :2]  # sin(1), cos(1)
    tensor([0.8415, 0.5403])
    """
    _check_size("seq", seq)
    _check_size("d_model", d_model, even=True, minimum=2)
    _check_base(base)

    # Angles for every (position, pair), then sine and cosine side by side in each pair.
    angles = _angles(torch.arange(seq), d_model, base)  # (seq, d_model // 2)
    pairs = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (seq, d_model // 2, 2)
    return pairs.flatten(-2).float()  # (seq, d_model)


class SinusoidalPositionalEncoding(nn.Module):
    """Add the fixed sinusoidal encoding to a batch of embeddings.

    The table is a buffer (it moves with ``.to(device)`` but is not trained and is not saved
    in the state dict, since it can always be rebuilt).

    Shape:
        forward: (..., seq, d_model) -> (..., seq, d_model), with ``seq <= max_seq``.
    """

    def __init__(self, max_seq: int, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        self.max_seq, self.d_model = max_seq, d_model
        self.register_buffer("pe", sinusoidal_encoding(max_seq, d_model, base), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = _check_positions_input(x, self.max_seq, self.d_model)
        return x + self.pe[:seq].to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_seq={self.max_seq}, d_model={self.d_model}"


class LearnedPositionalEmbedding(nn.Module):
    """Add one trained vector per position to a batch of embeddings.

    The parameter ``weight`` of shape (max_seq, d_model) starts as N(0, 0.02^2), small next to
    token embeddings so that training decides how much position information to carry (the
    scale GPT-2 uses). A model with learned positions cannot handle sequences longer than
    ``max_seq``: such an input raises ``ValueError``.

    Shape:
        forward: (..., seq, d_model) -> (..., seq, d_model), with ``seq <= max_seq``.
    """

    def __init__(self, max_seq: int, d_model: int) -> None:
        super().__init__()
        _check_size("max_seq", max_seq)
        _check_size("d_model", d_model)
        self.max_seq, self.d_model = max_seq, d_model
        self.weight = nn.Parameter(torch.randn(max_seq, d_model) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = _check_positions_input(x, self.max_seq, self.d_model)
        return x + self.weight[:seq]

    def extra_repr(self) -> str:
        return f"max_seq={self.max_seq}, d_model={self.d_model}"


def _check_positions_input(x: torch.Tensor, max_seq: int, d_model: int) -> int:
    """Return ``seq`` of ``x`` (..., seq, d_model), or raise a clear error."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] != d_model:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected input of shape (..., seq, {d_model}), got {shape}")
    seq = x.shape[-2]
    if seq > max_seq:
        raise ValueError(f"sequence of length {seq} is longer than max_seq={max_seq}")
    return seq


# ----------------------------------------------------------------------------------------------
# Rotary position embedding (applied to queries and keys)
# ----------------------------------------------------------------------------------------------


def rotary_angles(
    seq: int, d_head: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the cosines and sines of the rotary angles ``pos * base ** (-2i / d_head)``.

    Args:
        seq: number of positions.
        d_head: width of a query or key vector; must be even.
        base: sets the slowest rotation.

    Returns:
        ``(cos, sin)``, float32 tensors of shape (seq, d_head // 2): row ``pos``, column ``i``
        belongs to position ``pos`` and channel pair ``(2i, 2i + 1)``.
    """
    _check_size("seq", seq)
    _check_size("d_head", d_head, even=True, minimum=2)
    _check_base(base)
    angles = _angles(torch.arange(seq), d_head, base)  # (seq, d_head // 2)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(
    x: torch.Tensor, positions: torch.Tensor | None = None, base: float = 10000.0
) -> torch.Tensor:
    """Rotate each pair of channels of ``x`` by an angle proportional to its position.

    Channels ``(2i, 2i + 1)`` form a pair, read as a point in the plane, and the pair at
    position ``pos`` turns by ``pos * base ** (-2i / d_head)`` radians, counter-clockwise::

        out[2i]     = x[2i] * cos - x[2i + 1] * sin
        out[2i + 1] = x[2i] * sin + x[2i + 1] * cos

    Applied to queries and keys, the dot product of a query at position ``m`` with a key at
    position ``n`` then depends on the positions only through ``m - n``.

    Args:
        x: queries or keys, shape (..., seq, d_head) with ``d_head`` even.
        positions: integer positions of shape (seq,) or broadcastable to ``x.shape[:-1]``;
            defaults to ``0 .. seq - 1``.
        base: sets the slowest rotation.

    Returns:
        A tensor of the shape and dtype of ``x``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError("x must be a floating-point tensor of shape (..., seq, d_head)")
    seq, d_head = x.shape[-2], x.shape[-1]
    _check_size("d_head", d_head, even=True, minimum=2)
    _check_base(base)

    # Positions: 0 .. seq - 1 unless given (for instance the positions after a cache).
    if positions is None:
        positions = torch.arange(seq, device=x.device)
    elif not isinstance(positions, torch.Tensor) or positions.is_floating_point():
        raise TypeError(f"positions must be an integer tensor, got {positions!r:.60}")
    elif positions.dim() == 0 or positions.shape[-1] != seq:
        raise ValueError(
            f"positions must end with the sequence length {seq}, got shape "
            f"{tuple(positions.shape)}"
        )

    # Angles per (position, pair), cast to the dtype of x.
    angles = _angles(positions.to(x.device), d_head, base)  # (..., seq, d_head // 2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    # Rotate every (2i, 2i + 1) pair.
    pairs = x.unflatten(-1, (d_head // 2, 2))  # (..., seq, d_head // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]  # (..., seq, d_head // 2) each
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)  # (..., seq, d_head)


# ----------------------------------------------------------------------------------------------
# ALiBi (a bias on the attention scores)
# ----------------------------------------------------------------------------------------------


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Return one slope per head: for ``n`` heads, ``2 ** (-8 * h / n)`` for ``h = 1 .. n``.

    For a number of heads that is not a power of two, the slopes of the nearest smaller power
    of two ``p`` are followed by every other slope of ``2p`` heads (the odd ``h``), so the
    slopes stay between ``2 ** -8`` and 1 and no two heads share one.

    Returns:
        A float32 tensor of shape (n_heads,).
    """
    _check_size("n_heads", n_heads)

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    below = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = geometric(below) + geometric(2 * below)[0::2][: n_heads - below]
    return torch.tensor(slopes)


def alibi_bias(n_heads: int, seq: int) -> torch.Tensor:
    """Return the ALiBi penalty to add to the attention scores of each head.

    ``bias[h, q, k] = -slope[h] * |q - k|``: the further a key from the query, the lower its
    score, with a different slope per head. With a causal mask only ``k <= q`` is used, where
    the penalty is ``-slope[h] * (q - k)``.

    Returns:
        A float32 tensor of shape (n_heads, seq, seq), zero on the diagonal.
    """
    _check_size("seq", seq)
    positions = torch.arange(seq)
    distance = (positions.unsqueeze(1) - positions.unsqueeze(0)).abs()  # (seq, seq)
    return -alibi_slopes(n_heads).view(n_heads, 1, 1) * distance  # (n_heads, seq, seq)
