"""Checks for notebook 07, layer normalization and residual connections.

``LayerNorm`` is compared with ``torch.nn.LayerNorm`` and ``RMSNorm`` with ``torch.nn.RMSNorm``,
both with random scales and shifts copied into the learner's module (so a forgotten scale
shows). ``Residual`` is compared with ``course_lib.norm.Residual`` around a seeded sub-layer.
Inputs include rows of very small spread, where the place of ``eps`` matters.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib import norm as ref
from course_lib.attention import causal_mask
from course_lib.checks import Case, Mistake, check_function
from course_lib.exercises import Exercise
from course_lib.exercises.multihead_attention import load_weights
from course_lib.feedforward import FeedForward
from course_lib.multihead import MultiHeadAttention

__all__ = ["EXERCISES", "check_layer_norm", "check_residual", "check_rms_norm", "residual_case"]


# ----------------------------------------------------------------------------------------------
# Known mistakes: LayerNorm
# ----------------------------------------------------------------------------------------------


class _LayerNorm(nn.Module):
    """A correct layer norm whose statistics the mistakes below change."""

    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def normalise(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps)

    def forward(self, x):
        return self.normalise(x) * self.weight + self.bias


class _LayerNormUnbiased(_LayerNorm):
    def normalise(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        return (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + self.eps)


class _LayerNormEpsOutside(_LayerNorm):
    def normalise(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / (torch.sqrt(var) + self.eps)


class _LayerNormBatchAxis(_LayerNorm):
    def normalise(self, x):
        mean = x.mean(dim=0, keepdim=True)
        var = x.var(dim=0, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps)


class _LayerNormNoAffine(_LayerNorm):
    def forward(self, x):
        return self.normalise(x)


class _LayerNormUncentredVariance(_LayerNorm):
    def normalise(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        return (x - mean) / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


# ----------------------------------------------------------------------------------------------
# Known mistakes: RMSNorm
# ----------------------------------------------------------------------------------------------


class _RMSNorm(nn.Module):
    """A correct RMS norm whose statistics the mistakes below change."""

    def __init__(self, d_model, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def normalise(self, x):
        return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)

    def forward(self, x):
        return self.normalise(x) * self.weight


class _RMSNormCentred(_RMSNorm):
    def normalise(self, x):
        x = x - x.mean(dim=-1, keepdim=True)
        return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


class _RMSNormEpsOutside(_RMSNorm):
    def normalise(self, x):
        return x / (torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) + self.eps)


class _RMSNormSum(_RMSNorm):
    def normalise(self, x):
        return x / torch.sqrt(x.pow(2).sum(dim=-1, keepdim=True) + self.eps)


class _RMSNormNoScale(_RMSNorm):
    def forward(self, x):
        return self.normalise(x)


# ----------------------------------------------------------------------------------------------
# Known mistakes: Residual
# ----------------------------------------------------------------------------------------------


class _Residual(nn.Module):
    """A correct residual wrapper whose arrangements the mistakes below change."""

    def __init__(self, d_model, sublayer, norm_first=True):
        super().__init__()
        self.sublayer = sublayer
        self.norm = nn.LayerNorm(d_model)
        self.norm_first = norm_first

    def pre(self, x, *args, **kwargs):
        return x + self.sublayer(self.norm(x), *args, **kwargs)

    def post(self, x, *args, **kwargs):
        return self.norm(x + self.sublayer(x, *args, **kwargs))

    def forward(self, x, *args, **kwargs):
        if self.norm_first:
            return self.pre(x, *args, **kwargs)
        return self.post(x, *args, **kwargs)


class _ResidualFromNormalised(_Residual):
    def pre(self, x, *args, **kwargs):
        h = self.norm(x)
        return h + self.sublayer(h, *args, **kwargs)


class _ResidualPostNormOnSublayer(_Residual):
    def post(self, x, *args, **kwargs):
        return x + self.norm(self.sublayer(x, *args, **kwargs))


class _ResidualWithoutSkip(_Residual):
    def pre(self, x, *args, **kwargs):
        return self.sublayer(self.norm(x), *args, **kwargs)

    def post(self, x, *args, **kwargs):
        return self.norm(self.sublayer(x, *args, **kwargs))


class _ResidualArrangementsSwapped(_Residual):
    def forward(self, x, *args, **kwargs):
        if self.norm_first:
            return self.post(x, *args, **kwargs)
        return self.pre(x, *args, **kwargs)


class _ResidualPreNormOutputNormalised(_Residual):
    def pre(self, x, *args, **kwargs):
        return self.norm(x + self.sublayer(self.norm(x), *args, **kwargs))


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


LAYER_NORM_MISTAKES = _register(
    "layer_norm",
    "LayerNorm",
    [
        Mistake(
            "the unbiased variance",
            "divide the squared deviations by d_model, not d_model - 1: "
            "x.var(dim=-1, unbiased=False), as torch.nn.LayerNorm does",
            _LayerNormUnbiased,
        ),
        Mistake(
            "epsilon added outside the square root",
            "compute (x - mean) / sqrt(var + eps): eps goes inside the square root",
            _LayerNormEpsOutside,
        ),
        Mistake(
            "normalised over the batch axis instead of the features",
            "take the mean and variance over the last axis (dim=-1, keepdim=True): each "
            "position is normalised on its own",
            _LayerNormBatchAxis,
        ),
        Mistake(
            "the scale and shift are not applied",
            "multiply by self.weight and add self.bias after normalising",
            _LayerNormNoAffine,
        ),
        Mistake(
            "the variance was taken around zero, not around the mean",
            "the variance is the mean of (x - mean)**2",
            _LayerNormUncentredVariance,
        ),
    ],
)

RMS_NORM_MISTAKES = _register(
    "rms_norm",
    "RMSNorm",
    [
        Mistake(
            "the mean was subtracted",
            "RMSNorm does not centre: divide x itself by sqrt(mean(x**2) + eps)",
            _RMSNormCentred,
        ),
        Mistake(
            "epsilon added outside the square root",
            "compute x / sqrt(mean(x**2) + eps): eps goes inside the square root",
            _RMSNormEpsOutside,
        ),
        Mistake(
            "the sum of squares instead of the mean",
            "the root mean square divides the sum of squares by d_model: use .mean(dim=-1)",
            _RMSNormSum,
        ),
        Mistake(
            "the scale is not applied", "multiply the normalised x by self.weight", _RMSNormNoScale
        ),
    ],
)

RESIDUAL_MISTAKES = _register(
    "residual",
    "Residual",
    [
        Mistake(
            "pre-norm adds the normalised input instead of x",
            "the residual stream skips the norm: return x + sublayer(norm(x)), not "
            "norm(x) + sublayer(norm(x))",
            _ResidualFromNormalised,
        ),
        Mistake(
            "post-norm normalises only the sub-layer's output",
            "post-norm normalises the sum: norm(x + sublayer(x))",
            _ResidualPostNormOnSublayer,
        ),
        Mistake(
            "the residual connection is missing",
            "add the input x back: pre-norm x + sublayer(norm(x)), post-norm "
            "norm(x + sublayer(x))",
            _ResidualWithoutSkip,
        ),
        Mistake(
            "pre-norm and post-norm swapped",
            "norm_first=True is pre-norm, x + sublayer(norm(x)); norm_first=False is post-norm",
            _ResidualArrangementsSwapped,
        ),
        Mistake(
            "pre-norm normalises its output too",
            "pre-norm never normalises the residual stream: return x + sublayer(norm(x))",
            _ResidualPreNormOutputNormalised,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# Runners and checks
# ----------------------------------------------------------------------------------------------


def _randomise(module: nn.Module) -> nn.Module:
    """Give every parameter random values, so that a missing scale or shift shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + 1.0)
    return module


def _norm_runner(cls: type, make_reference, name: str):
    def run(d_model, x, eps=None, seed=0):
        kwargs = {} if eps is None else {"eps": eps}
        torch.manual_seed(seed)
        reference = _randomise(make_reference(d_model, **kwargs))
        module = load_weights(cls(d_model, **kwargs), reference, name)
        with torch.no_grad():
            return module(x)

    return run


def _layer_norm_runner(cls):
    return _norm_runner(cls, nn.LayerNorm, "LayerNorm")


def _rms_norm_runner(cls):
    return _norm_runner(cls, _torch_rms_norm, "RMSNorm")


def _torch_rms_norm(d_model: int, eps: float = 1e-6) -> nn.Module:
    return nn.RMSNorm(d_model, eps=eps)


def _residual_runner(cls: type):
    def run(d_model, sublayer, x, norm_first=True, sublayer_kwargs=None, seed=0):
        torch.manual_seed(seed)
        reference = ref.Residual(d_model, sublayer, norm_first=norm_first)
        _randomise(reference.norm)
        module = load_weights(cls(d_model, sublayer, norm_first=norm_first), reference, "Residual")
        with torch.no_grad():
            return module.eval()(x, **(sublayer_kwargs or {}))

    return run


def _wrap(mistakes, runner):
    return [Mistake(m.name, m.hint, runner(m.impl)) for m in mistakes]


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def _check_class(cls, name):
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"pass the class {name} itself (a torch.nn.Module subclass), got {cls!r}")


def _norm_cases(seed: int, eps_small: float) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    return [
        Case((8, torch.randn(4, 8, generator=g) * 3 + 2), label="a batch of vectors"),
        Case((16, torch.randn(2, 5, 16, generator=g)), {"seed": 1}, label="(batch, seq, d_model)"),
        Case(
            (6, torch.randn(3, 6, generator=g) * 0.01),
            {"eps": eps_small, "seed": 2},
            label="a tiny spread",
        ),
        Case(
            (5, torch.randn(2, 3, 5, generator=g) + 10),
            {"eps": 0.1, "seed": 3},
            label="a large eps",
        ),
    ]


def check_layer_norm(cls, cases=None) -> None:
    """Check the class ``LayerNorm(d_model, eps=1e-5)`` against ``torch.nn.LayerNorm``.

    A case is ``Case((d_model, x), {"eps": ..., "seed": ...})``; the check gives torch's module
    random scale and shift and copies them into yours.
    """
    _check_class(cls, "LayerNorm")
    check_function(
        _layer_norm_runner(cls),
        _layer_norm_runner(nn.LayerNorm),
        _cases(cases, _norm_cases(70, 1e-5)),
        name="LayerNorm",
        mistakes=_wrap(LAYER_NORM_MISTAKES, _layer_norm_runner),
    )


def check_rms_norm(cls, cases=None) -> None:
    """Check the class ``RMSNorm(d_model, eps=1e-6)`` against ``torch.nn.RMSNorm``.

    A case is ``Case((d_model, x), {"eps": ..., "seed": ...})``.
    """
    _check_class(cls, "RMSNorm")
    g = torch.Generator().manual_seed(71)
    default = _norm_cases(71, 1e-6)[:2] + [
        Case(
            (6, torch.randn(3, 6, generator=g) * 1e-3),
            {"eps": 1e-6, "seed": 2},
            label="tiny values",
        ),
        Case(
            (5, torch.randn(2, 3, 5, generator=g) + 4),
            {"eps": 0.1, "seed": 3},
            label="values far from zero",
        ),
    ]
    check_function(
        _rms_norm_runner(cls),
        _rms_norm_runner(_torch_rms_norm),
        _cases(cases, default),
        name="RMSNorm",
        mistakes=_wrap(RMS_NORM_MISTAKES, _rms_norm_runner),
    )


def residual_case(
    sublayer: str,
    d_model: int,
    x: torch.Tensor,
    norm_first: bool,
    seed: int = 0,
    label: str = "",
    **sublayer_kwargs,
) -> Case:
    """Build a case for :func:`check_residual` around a seeded ``"linear"``, ``"ffn"`` or
    ``"attention"`` sub-layer (extra keyword arguments go to the sub-layer's forward)."""
    torch.manual_seed(seed)
    modules = {
        "linear": lambda: nn.Linear(d_model, d_model),
        "ffn": lambda: FeedForward(d_model),
        "attention": lambda: MultiHeadAttention(d_model, 2),
    }
    if sublayer not in modules:
        raise ValueError(f"sublayer must be one of {sorted(modules)}, got {sublayer!r}")
    kwargs = {"norm_first": norm_first, "seed": seed}
    if sublayer_kwargs:
        kwargs["sublayer_kwargs"] = sublayer_kwargs
    return Case((d_model, modules[sublayer](), x), kwargs, label=label)


def check_residual(cls, cases=None) -> None:
    """Check the class ``Residual(d_model, sublayer, norm_first=True)``.

    Build cases with :func:`residual_case`.
    """
    _check_class(cls, "Residual")
    g = torch.Generator().manual_seed(72)
    x = torch.randn(2, 5, 8, generator=g) * 2 + 1
    default = [
        residual_case("linear", 8, x, True, seed=1, label="pre-norm around a linear layer"),
        residual_case("linear", 8, x, False, seed=2, label="post-norm around a linear layer"),
        residual_case("ffn", 8, x, True, seed=3, label="pre-norm around a feed-forward network"),
        residual_case(
            "attention",
            8,
            x,
            False,
            seed=4,
            label="post-norm around masked attention",
            mask=causal_mask(5),
        ),
    ]
    check_function(
        _residual_runner(cls),
        _residual_runner(ref.Residual),
        _cases(cases, default),
        name="Residual",
        mistakes=_wrap(RESIDUAL_MISTAKES, _residual_runner),
    )
