"""Layer normalization, RMS normalization and the residual sub-layer that uses them.

Each position's vector of ``d_model`` features is normalised on its own (over the last
dimension), so that the sub-layers of a deep stack see inputs of a steady scale. A residual
connection adds a sub-layer's output back to its input, so that every layer only has to
learn a correction and gradients reach the first layers through the sum.

>>> norm = LayerNorm(4)
>>> y = norm(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
>>> round(y.mean().item(), 6), round(y.var(unbiased=False).item(), 4)
(0.0, 1.0)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerNorm", "RMSNorm", "Residual"]

# Half-precision inputs are normalised in float32: their mean and variance lose digits otherwise.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_features(name: str, x: torch.Tensor, d_model: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} needs a floating-point tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != d_model:
        raise ValueError(
            f"{name} normalises the last dimension, which must be d_model={d_model}; "
            f"got an input of shape {tuple(x.shape)}"
        )


def _check_init(d_model: int, eps: float) -> None:
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise ValueError(f"d_model must be a positive int, got {d_model!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")


class LayerNorm(nn.Module):
    """Normalise each position to zero mean and unit variance, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the mean and the biased
    variance (divided by ``d_model``, not ``d_model - 1``) taken over the last dimension, the
    same as ``torch.nn.LayerNorm(d_model, eps)``.

    Args:
        d_model: size of the last dimension.
        eps: added to the variance inside the square root.

    Shape:
        (..., d_model) -> (..., d_model).
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        _check_init(d_model, eps)
        self.d_model, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., d_model) over its last dimension."""
        _check_features("LayerNorm", x, self.d_model)
        h = x.float() if x.dtype in _LOW_PRECISION else x

        # Mean and biased variance of each position's features.
        var, mean = torch.var_mean(h, dim=-1, keepdim=True, correction=0)  # (..., 1) each
        h = (h - mean) * torch.rsqrt(var + self.eps)
        return (h * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class RMSNorm(nn.Module):
    """Divide each position by the root mean square of its features, then scale.

    ``y = x / sqrt(mean(x^2) + eps) * weight``: no mean is subtracted and there is no shift,
    the same as ``torch.nn.RMSNorm(d_model, eps)``.

    Args:
        d_model: size of the last dimension.
        eps: added to the mean square inside the square root.

    Shape:
        (..., d_model) -> (..., d_model).
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        _check_init(d_model, eps)
        self.d_model, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., d_model) over its last dimension."""
        _check_features("RMSNorm", x, self.d_model)
        h = x.float() if x.dtype in _LOW_PRECISION else x
        h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (h * self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class Residual(nn.Module):
    """A sub-layer with a residual connection and a normalization, in either arrangement.

    * pre-norm (``norm_first=True``, GPT-2 and later): ``x + dropout(sublayer(norm(x)))``;
      the residual stream itself is never normalised.
    * post-norm (``norm_first=False``, the original Transformer):
      ``norm(x + dropout(sublayer(x)))``.

    Extra arguments of ``forward`` (such as an attention mask) are passed to the sub-layer.

    Args:
        d_model: width of the residual stream.
        sublayer: a module mapping (..., d_model) to (..., d_model).
        norm_first: pre-norm when True, post-norm when False.
        dropout: probability of dropping a value of the sub-layer's output while training.
        norm: the normalization; defaults to ``LayerNorm(d_model)``.

    Shape:
        (..., d_model) -> (..., d_model).
    """

    def __init__(
        self,
        d_model: int,
        sublayer: nn.Module,
        norm_first: bool = True,
        dropout: float = 0.0,
        norm: nn.Module | None = None,
    ):
        super().__init__()
        if not isinstance(sublayer, nn.Module):
            raise TypeError(f"sublayer must be a torch.nn.Module, got {type(sublayer).__name__}")
        self.sublayer = sublayer
        self.norm = LayerNorm(d_model) if norm is None else norm
        self.norm_first = norm_first
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Apply the sub-layer to ``x`` (..., d_model) with the residual connection."""
        if self.norm_first:
            return x + self.dropout(self.sublayer(self.norm(x), *args, **kwargs))
        return self.norm(x + self.dropout(self.sublayer(x, *args, **kwargs)))

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"
