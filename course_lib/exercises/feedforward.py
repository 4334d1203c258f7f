"""Checks for notebook 06, the position-wise feed-forward network.

GELU is compared with ``torch.nn.functional.gelu``; the modules with ``course_lib.feedforward``
(with the reference weights copied into the learner's module); the parameter count with the
number of parameters of the course's modules, built without memory on the ``meta`` device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import feedforward as ref
from course_lib.checks import Case, Mistake, check_function
from course_lib.exercises import Exercise
from course_lib.exercises.multihead_attention import load_weights
from course_lib.multihead import MultiHeadAttention
from course_lib.norm import LayerNorm

__all__ = [
    "EXERCISES",
    "CausalSelfAttention",
    "MeanMixer",
    "ShiftRight",
    "check_feed_forward",
    "check_gelu",
    "check_layer_parameter_count",
    "check_positions_independent",
    "check_swiglu",
    "ref_layer_parameter_count",
    "ref_positions_independent",
]


# ----------------------------------------------------------------------------------------------
# References in the exact form the notebook asks for
# ----------------------------------------------------------------------------------------------


def ref_gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def ref_positions_independent(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether changing the input at one position changes the output at that position only."""
    with torch.no_grad():
        out = module(x)
        for p in range(x.shape[1]):
            changed = x.clone()
            changed[:, p] = torch.randn_like(x[:, p])
            others = torch.arange(x.shape[1]) != p
            if not torch.allclose(module(changed)[:, others], out[:, others], atol=1e-6):
                return False
    return True


def ref_layer_parameter_count(d_model: int, d_ff: int) -> dict[str, int]:
    """Count the parameters of the course's modules for one pre-norm transformer layer."""
    with torch.device("meta"):  # shapes only, no memory
        attention = MultiHeadAttention(d_model, n_heads=1)
        feed_forward = ref.FeedForward(d_model, d_ff)
        norms = nn.ModuleList([LayerNorm(d_model), LayerNorm(d_model)])
    counts = {
        "attention": ref.count_parameters(attention),
        "feed_forward": ref.count_parameters(feed_forward),
        "norms": ref.count_parameters(norms),
    }
    counts["total"] = sum(counts.values())
    return counts


# ----------------------------------------------------------------------------------------------
# Modules that mix positions, for the independence check
# ----------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a causal mask: each position sees the earlier ones."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.attention = MultiHeadAttention(d_model, n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, is_causal=True)


class MeanMixer(nn.Module):
    """Adds the average over the positions to every position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x.mean(dim=1, keepdim=True)


class ShiftRight(nn.Module):
    """Each position gets the previous position's vector (position 0 gets zeros)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 1, 0))[:, :-1]


# ----------------------------------------------------------------------------------------------
# Known mistakes
# ----------------------------------------------------------------------------------------------


def _gelu_always_tanh(x, approximate="none"):
    return F.gelu(x, approximate="tanh")


def _gelu_always_exact(x, approximate="none"):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_without_sqrt2(x, approximate="none"):
    if approximate == "tanh":
        return F.gelu(x, approximate="tanh")
    return 0.5 * x * (1 + torch.erf(x))


def _gelu_without_half(x, approximate="none"):
    return 2 * F.gelu(x, approximate=approximate)


def _gelu_sigmoid(x, approximate="none"):
    return x * torch.sigmoid(1.702 * x)


class _FeedForward(nn.Module):
    """A correct feed-forward network whose steps the mistakes below change."""

    def __init__(self, d_model, d_ff=None):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def act(self, h):
        return F.gelu(h)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class _FeedForwardReLU(_FeedForward):
    def act(self, h):
        return F.relu(h)


class _FeedForwardTanhGelu(_FeedForward):
    def act(self, h):
        return F.gelu(h, approximate="tanh")


class _FeedForwardLinear(_FeedForward):
    def act(self, h):
        return h


class _FeedForwardActivationAfter(_FeedForward):
    def forward(self, x):
        return F.gelu(super().forward(x))


def _independent_whole_output(module, x):
    with torch.no_grad():
        changed = x.clone()
        changed[:, 0] = torch.randn_like(x[:, 0])
        return torch.allclose(module(changed), module(x), atol=1e-6)


def _independent_last_only(module, x):
    with torch.no_grad():
        changed = x.clone()
        changed[:, -1] = torch.randn_like(x[:, -1])
        return torch.allclose(module(changed)[:, :-1], module(x)[:, :-1], atol=1e-6)


def _independent_by_permutation(module, x):
    with torch.no_grad():
        order = torch.randperm(x.shape[1])
        return torch.allclose(module(x[:, order]), module(x)[:, order], atol=1e-6)


def _count_without_biases(d_model, d_ff):
    counts = {
        "attention": 4 * d_model**2,
        "feed_forward": 2 * d_model * d_ff,
        "norms": 4 * d_model,
    }
    return {**counts, "total": sum(counts.values())}


def _count_without_out_proj(d_model, d_ff):
    counts = ref_layer_parameter_count(d_model, d_ff)
    counts["attention"] = 3 * d_model**2 + 3 * d_model
    counts["total"] = counts["attention"] + counts["feed_forward"] + counts["norms"]
    return counts


def _count_with_fixed_width(d_model, d_ff):
    return ref_layer_parameter_count(d_model, 4 * d_model)


def _count_norms_without_shift(d_model, d_ff):
    counts = ref_layer_parameter_count(d_model, d_ff)
    counts["norms"] = 2 * d_model
    counts["total"] = counts["attention"] + counts["feed_forward"] + counts["norms"]
    return counts


class _SwiGLU(nn.Module):
    """A correct SwiGLU network whose gating the mistakes below change."""

    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def hidden(self, x):
        return F.silu(self.gate(x)) * self.up(x)

    def forward(self, x):
        return self.down(self.hidden(x))


class _SwiGLUSwapped(_SwiGLU):
    def hidden(self, x):
        return self.gate(x) * F.silu(self.up(x))


class _SwiGLUSigmoid(_SwiGLU):
    def hidden(self, x):
        return torch.sigmoid(self.gate(x)) * self.up(x)


class _SwiGLUNoGate(_SwiGLU):
    def hidden(self, x):
        return F.silu(self.up(x))


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


GELU_MISTAKES = _register(
    "gelu",
    "gelu",
    [
        Mistake(
            "the tanh approximation where the exact form was asked",
            "with approximate='none' use the erf form 0.5 * x * (1 + erf(x / sqrt(2))); the tanh "
            "form is only for approximate='tanh'",
            _gelu_always_tanh,
        ),
        Mistake(
            "the approximate argument is ignored",
            "with approximate='tanh' return 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * "
            "x**3)))",
            _gelu_always_exact,
        ),
        Mistake(
            "erf(x) instead of erf(x / sqrt(2))",
            "the normal CDF is (1 + erf(x / sqrt(2))) / 2: divide by sqrt(2) inside erf",
            _gelu_without_sqrt2,
        ),
        Mistake(
            "the factor 1/2 is missing",
            "Phi(x) = (1 + erf(x / sqrt(2))) / 2 lies between 0 and 1; multiply by 0.5",
            _gelu_without_half,
        ),
        Mistake(
            "the sigmoid approximation x * sigmoid(1.702 x)",
            "that is a third, rougher approximation; compute the exact erf form (or the tanh "
            "form when asked)",
            _gelu_sigmoid,
        ),
    ],
)

FFN_MISTAKES = _register(
    "feed_forward",
    "FeedForward",
    [
        Mistake(
            "ReLU instead of GELU",
            "apply the exact GELU (your gelu, or F.gelu) between the two layers",
            _FeedForwardReLU,
        ),
        Mistake(
            "the tanh form of GELU",
            "use the exact GELU (approximate='none') between the layers",
            _FeedForwardTanhGelu,
        ),
        Mistake(
            "no non-linearity between the layers",
            "two linear layers in a row are one linear map; put the GELU between them",
            _FeedForwardLinear,
        ),
        Mistake(
            "a GELU after the second layer too",
            "the output of self.down is returned as it is: the activation goes only between "
            "the layers",
            _FeedForwardActivationAfter,
        ),
    ],
)

INDEPENDENT_MISTAKES = _register(
    "positions_independent",
    "positions_independent",
    [
        Mistake(
            "the changed position was compared too",
            "the output at the position you changed is allowed to change: compare only the "
            "other positions",
            _independent_whole_output,
        ),
        Mistake(
            "only the last position was changed",
            "a causal module never lets the last position influence the others, so changing "
            "only it proves nothing; change each position in turn",
            _independent_last_only,
        ),
        Mistake(
            "a permutation test",
            "self-attention without a mask also commutes with permutations of the positions, "
            "yet every output depends on every input; change one position at a time instead",
            _independent_by_permutation,
        ),
    ],
)

COUNT_MISTAKES = _register(
    "layer_parameter_count",
    "layer_parameter_count",
    [
        Mistake(
            "the biases were not counted",
            "each nn.Linear(d_in, d_out) has d_in * d_out weights and d_out biases",
            _count_without_biases,
        ),
        Mistake(
            "the output projection was not counted",
            "attention has four d_model x d_model projections: query, key, value and output",
            _count_without_out_proj,
        ),
        Mistake(
            "d_ff taken as 4 * d_model",
            "use the d_ff you are given: not every model uses four times the width",
            _count_with_fixed_width,
        ),
        Mistake(
            "the LayerNorm shifts were not counted",
            "each LayerNorm has a scale and a shift, d_model values each, and the layer has two",
            _count_norms_without_shift,
        ),
    ],
)

SWIGLU_MISTAKES = _register(
    "swiglu",
    "SwiGLU",
    [
        Mistake(
            "the SiLU is applied to the wrong projection",
            "the gate is silu(self.gate(x)); it multiplies self.up(x), which stays linear",
            _SwiGLUSwapped,
        ),
        Mistake(
            "a sigmoid gate instead of SiLU",
            "SiLU(z) = z * sigmoid(z): the gate keeps its own value, not only the sigmoid",
            _SwiGLUSigmoid,
        ),
        Mistake(
            "the gate is missing",
            "multiply silu(self.gate(x)) elementwise by self.up(x) before self.down",
            _SwiGLUNoGate,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# Runners and checks
# ----------------------------------------------------------------------------------------------


def _module_runner(cls: type, make_reference: Callable[..., nn.Module], name: str):
    def run(*sizes, x, seed=0):
        torch.manual_seed(seed)
        reference = make_reference(*sizes)
        module = load_weights(cls(*sizes), reference, name)
        with torch.no_grad():
            return module.eval()(x)

    return run


def _wrap(mistakes, runner):
    return [Mistake(m.name, m.hint, runner(m.impl)) for m in mistakes]


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def _check_class(cls, name):
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"pass the class {name} itself (a torch.nn.Module subclass), got {cls!r}")


def _randn(generator, *shape, scale=1.0):
    return torch.randn(*shape, generator=generator) * scale


def check_gelu(fn, cases=None) -> None:
    """Check ``gelu(x, approximate="none")`` against ``torch.nn.functional.gelu``."""
    g = torch.Generator().manual_seed(60)
    grid = torch.linspace(-6, 6, 49)
    default = [
        Case((grid,), label="exact form from -6 to 6"),
        Case((grid,), {"approximate": "tanh"}, label="tanh form from -6 to 6"),
        Case((_randn(g, 3, 5, 8, scale=3),), label="exact form on a batch"),
        Case(
            (torch.tensor([-20.0, -0.5, 0.0, 0.5, 20.0]),),
            {"approximate": "tanh"},
            label="tanh form far from zero",
        ),
        Case((torch.linspace(-4, 4, 17, dtype=torch.float64),), label="exact form in float64"),
    ]
    check_function(fn, ref_gelu, _cases(cases, default), name="gelu", mistakes=GELU_MISTAKES)


def check_feed_forward(cls, cases=None) -> None:
    """Check the class ``FeedForward(d_model, d_ff=None)``.

    A case is ``Case((d_model, d_ff), {"x": ..., "seed": ...})`` (``d_ff`` may be ``None``).
    """
    _check_class(cls, "FeedForward")
    g = torch.Generator().manual_seed(61)
    default = [
        Case((8, 32), {"x": _randn(g, 2, 5, 8, scale=2), "seed": 1}, label="d_ff = 4 d_model"),
        Case((12, 20), {"x": _randn(g, 3, 4, 12, scale=2), "seed": 2}, label="another width"),
        Case((6, None), {"x": _randn(g, 1, 3, 6, scale=2), "seed": 3}, label="default d_ff"),
    ]
    runner = _ffn_runner(cls)
    check_function(
        runner,
        _ffn_runner(ref.FeedForward),
        _cases(cases, default),
        name="FeedForward",
        mistakes=_wrap(FFN_MISTAKES, _ffn_runner),
    )


def _ffn_runner(cls):
    return _module_runner(cls, ref.FeedForward, "FeedForward")


def _independence_cases() -> list[Case]:
    torch.manual_seed(62)
    g = torch.Generator().manual_seed(62)
    x = _randn(g, 2, 6, 8)
    return [
        Case((ref.FeedForward(8), x), label="a feed-forward network"),
        Case((nn.Linear(8, 8), x), label="a linear layer"),
        Case((MultiHeadAttention(8, 2), x), label="self-attention"),
        Case((CausalSelfAttention(8, 2), x), label="causal self-attention"),
        Case((ShiftRight(), x), label="a shift by one position"),
        Case((MeanMixer(), x), label="adding the mean over positions"),
    ]


def check_positions_independent(fn, cases=None) -> None:
    """Check ``positions_independent(module, x) -> bool`` on modules that do and do not mix."""
    cases = _cases(cases, _independence_cases())
    check_function(
        fn,
        ref_positions_independent,
        cases,
        name="positions_independent",
        mistakes=INDEPENDENT_MISTAKES,
    )


def check_layer_parameter_count(fn, cases=None) -> None:
    """Check ``layer_parameter_count(d_model, d_ff) -> dict`` against the course's modules."""
    default = [
        Case((64, 256), label="a small layer"),
        Case((768, 3072), label="GPT-2 small"),
        Case((10, 30), label="d_ff = 3 d_model"),
    ]
    check_function(
        fn,
        ref_layer_parameter_count,
        _cases(cases, default),
        name="layer_parameter_count",
        mistakes=COUNT_MISTAKES,
    )


def _swiglu_runner(cls):
    return _module_runner(cls, ref.SwiGLU, "SwiGLU")


def check_swiglu(cls, cases=None) -> None:
    """Check the class ``SwiGLU(d_model, d_ff)``.

    A case is ``Case((d_model, d_ff), {"x": ..., "seed": ...})``.
    """
    _check_class(cls, "SwiGLU")
    g = torch.Generator().manual_seed(63)
    default = [
        Case((8, 24), {"x": _randn(g, 2, 5, 8, scale=2), "seed": 1}, label="d_ff = 3 d_model"),
        Case((12, 32), {"x": _randn(g, 3, 4, 12, scale=2), "seed": 2}, label="another width"),
    ]
    check_function(
        _swiglu_runner(cls),
        _swiglu_runner(ref.SwiGLU),
        _cases(cases, default),
        name="SwiGLU",
        mistakes=_wrap(SWIGLU_MISTAKES, _swiglu_runner),
    )
