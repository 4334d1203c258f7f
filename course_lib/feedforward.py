"""The position-wise feed-forward network of a transformer layer, and its activations.

Every position goes through the same two-layer network on its own: a linear map up to a
wider hidden layer (``d_ff``, usually ``4 * d_model``), a non-linearity, and a linear map
back down to ``d_model``. No information moves between positions here; that is the job of
attention.

>>> ffn = FeedForward(d_model=8)
>>> ffn(torch.randn(2, 5, 8)).shape
torch.Size([2, 5, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "FeedForward", "SwiGLU", "count_parameters", "gelu", "swiglu_width"]

# sqrt(2 / pi), the slope of the tanh form of GELU.
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Return the Gaussian error linear unit ``x * Phi(x)`` elementwise.

    ``Phi`` is the standard normal cumulative distribution function,
    ``Phi(x) = (1 + erf(x / sqrt(2))) / 2``. The ``"tanh"`` form replaces it with
    ``(1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2``, which GPT-2 used; the two differ
    by less than 0.001 everywhere. Both match ``torch.nn.functional.gelu`` with the same
    ``approximate``.

    Args:
        x: any floating-point tensor.
        approximate: ``"none"`` for the exact form, ``"tanh"`` for the approximation.

    Returns:
        A tensor of the shape of ``x``.
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return gelu(x, approximate="tanh")


# The non-linearities FeedForward accepts, by name.
ACTIVATIONS = {"gelu": gelu, "gelu_tanh": _gelu_tanh, "relu": F.relu, "silu": F.silu}


def _check_width(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class FeedForward(nn.Module):
    """Two linear layers with a non-linearity between them, applied at every position.

    Args:
        d_model: width of the inputs and outputs.
        d_ff: hidden width; defaults to ``4 * d_model``.
        dropout: probability of dropping an output value while training.
        activation: one of ``ACTIVATIONS``: ``"gelu"`` (exact), ``"gelu_tanh"``, ``"relu"``
            or ``"silu"``.

    Shape:
        (..., d_model) -> (..., d_model); the hidden layer is (..., d_ff).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        activation: str = "gelu",
    ):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        _check_width("d_model", d_model)
        _check_width("d_ff", d_ff)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.d_model, self.d_ff, self.activation = d_model, d_ff, activation
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to every position of ``x`` (..., d_model)."""
        hidden = ACTIVATIONS[self.activation](self.up(x))  # (..., d_ff)
        return self.dropout(self.down(hidden))  # (..., d_model)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


def swiglu_width(d_model: int, multiple_of: int = 8) -> int:
    """Return the hidden width that gives a SwiGLU network the parameters of a 4x FeedForward.

    SwiGLU has three ``d_model x d_ff`` matrices instead of two, so its hidden layer is
    two thirds of ``4 * d_model`` wide, rounded up to a multiple of ``multiple_of``.

    >>> swiglu_width(768)
    2048
    """
    _check_width("d_model", d_model)
    _check_width("multiple_of", multiple_of)
    width = math.ceil(2 * 4 * d_model / 3)
    return multiple_of * math.ceil(width / multiple_of)


class SwiGLU(nn.Module):
    """A gated feed-forward network: ``down(silu(gate(x)) * up(x))``.

    The SiLU of one projection (the gate) scales another projection elementwise before the
    projection back down, as in PaLM and LLaMA. The three projections have no bias.

    Args:
        d_model: width of the inputs and outputs.
        d_ff: hidden width; defaults to :func:`swiglu_width` of ``d_model``.

    Shape:
        (..., d_model) -> (..., d_model).
    """

    def __init__(self, d_model: int, d_ff: int | None = None):
        super().__init__()
        d_ff = swiglu_width(d_model) if d_ff is None else d_ff
        _check_width("d_model", d_model)
        _check_width("d_ff", d_ff)
        self.d_model, self.d_ff = d_model, d_ff
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated network to every position of ``x`` (..., d_model)."""
        hidden = F.silu(self.gate(x)) * self.up(x)  # (..., d_ff)
        return self.down(hidden)  # (..., d_model)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of scalar parameters of ``module``.

    A parameter shared by two submodules (tied weights) is counted once.

    Args:
        module: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    # parameters() yields a shared tensor once.
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
