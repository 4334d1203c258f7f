"""Checks for notebook 03, positional encoding.

The references are ``course_lib.positional``. Some cases expect an error (an odd width, a
sequence longer than the table): the learner's function runs through :func:`outcome`, which
turns an error into a :class:`Raised` value that the check compares like any result, so a
missing ``ValueError`` fails with a clear message. ``NotImplementedError`` is never turned
into a value: an unsolved exercise stops the check as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from course_lib.checks import Case, Mistake, check_function, describe_difference, fail
from course_lib.exercises import Exercise
from course_lib.positional import (
    LearnedPositionalEmbedding,
    apply_rotary,
    sinusoidal_encoding,
)

# ----------------------------------------------------------------------------------------------
# Errors as results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raised:
    """The result of a call that raised: the kind of error (compared) and its message."""

    kind: str
    message: str = field(default="", compare=False)

    def __repr__(self) -> str:
        return f"raises {self.kind}"


def outcome(fn: Callable) -> Callable:
    """Wrap ``fn`` so that an error becomes a :class:`Raised` result (except unsolved code)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as error:
            return Raised(type(error).__name__, str(error))

    return call


def _brief(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{value!r:.80}"


def compare_outcomes(expected: Any, got: Any) -> str | None:
    """Like ``describe_difference``, with errors as possible results on either side."""
    if isinstance(expected, Raised):
        if isinstance(got, Raised):
            if got.kind == expected.kind:
                return None
            return f"it should raise {expected.kind}, but it raised {got.kind}: {got.message}"
        return (
            f"it should raise {expected.kind} ({expected.message}), but it returned {_brief(got)}"
        )
    if isinstance(got, Raised):
        return f"it raised {got.kind}: {got.message}"
    return describe_difference(expected, got)


# ----------------------------------------------------------------------------------------------
# References, in the exact form the notebook asks for
# ----------------------------------------------------------------------------------------------


def ref_sinusoidal_encoding(seq: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    return sinusoidal_encoding(seq, d_model, base)


def ref_apply_rotary(x: torch.Tensor, positions=None, base: float = 10000.0) -> torch.Tensor:
    return apply_rotary(x, positions, base)


def _learned_probe(cls: Callable) -> Callable:
    """Wrap a positional-embedding class into a function of (max_seq, d_model, x)."""

    def probe(max_seq: int, d_model: int, x: torch.Tensor) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = cls(max_seq, d_model)
        if not isinstance(module, nn.Module):
            fail(f"the class should build an nn.Module, got {type(module).__name__}")

        # The parameters: a table named weight, (max_seq, d_model), to be trained.
        params = {name: tuple(p.shape) for name, p in module.named_parameters()}
        report: dict = {"trainable parameters": params}
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (max_seq, d_model):
            return report

        # Fixed values for the table, then forward (which may have to raise) and backward.
        fixed = torch.randn(max_seq, d_model, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            weight.copy_(fixed)
        out = outcome(module)(x)
        if isinstance(out, Raised):
            return out
        report["output"] = out
        if isinstance(out, torch.Tensor) and out.requires_grad:
            upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
            (out * upstream).sum().backward()
            report["output"] = out.detach()
            report["gradient of weight"] = weight.grad
        return report

    return probe


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


def _angles(seq, width, base, exponent_step=2):
    pair = torch.arange(width // 2, dtype=torch.float64)
    return torch.arange(seq, dtype=torch.float64).unsqueeze(1) / base ** (
        exponent_step * pair / width
    )


def _sinusoidal_blocks(seq, d_model, base=10000.0):
    if d_model % 2:
        raise ValueError("d_model must be even")
    angles = _angles(seq, d_model, base)
    return torch.cat((angles.sin(), angles.cos()), dim=-1).float()


def _sinusoidal_swapped(seq, d_model, base=10000.0):
    if d_model % 2:
        raise ValueError("d_model must be even")
    angles = _angles(seq, d_model, base)
    return torch.stack((angles.cos(), angles.sin()), dim=-1).flatten(-2).float()


def _sinusoidal_channel_exponent(seq, d_model, base=10000.0):
    if d_model % 2:
        raise ValueError("d_model must be even")
    channel = torch.arange(d_model, dtype=torch.float64)
    angles = torch.arange(seq, dtype=torch.float64).unsqueeze(1) / base ** (channel / d_model)
    return torch.where(channel % 2 == 0, angles.sin(), angles.cos()).float()


class _LearnedAsBuffer(nn.Module):
    def __init__(self, max_seq, d_model):
        super().__init__()
        self.max_seq = max_seq
        self.register_buffer("weight", torch.randn(max_seq, d_model) * 0.02)

    def forward(self, x):
        if x.shape[-2] > self.max_seq:
            raise ValueError("sequence longer than max_seq")
        return x + self.weight[: x.shape[-2]]


class _LearnedLastRows(LearnedPositionalEmbedding):
    def forward(self, x):
        if x.shape[-2] > self.max_seq:
            raise ValueError("sequence longer than max_seq")
        return x + self.weight[self.max_seq - x.shape[-2] :]


class _LearnedPositionsOnly(LearnedPositionalEmbedding):
    def forward(self, x):
        if x.shape[-2] > self.max_seq:
            raise ValueError("sequence longer than max_seq")
        return self.weight[: x.shape[-2]].expand_as(x)


def _rotary_parts(x, positions, base, exponent_step=2):
    seq, d_head = x.shape[-2], x.shape[-1]
    if d_head % 2:
        raise ValueError("d_head must be even")
    positions = torch.arange(seq) if positions is None else positions
    pair = torch.arange(d_head // 2, dtype=torch.float64)
    angles = positions.double().unsqueeze(-1) * base ** (-exponent_step * pair / d_head)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def _rotary_half_split(x, positions=None, base=10000.0):
    cos, sin = _rotary_parts(x, positions, base)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)


def _rotary_clockwise(x, positions=None, base=10000.0):
    cos, sin = _rotary_parts(x, positions, base)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos + odd * sin, -even * sin + odd * cos), dim=-1).flatten(-2)


def _rotary_pair_exponent(x, positions=None, base=10000.0):
    cos, sin = _rotary_parts(x, positions, base, exponent_step=1)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


SINUSOIDAL_MISTAKES = _register(
    "sinusoidal_encoding",
    "sinusoidal_encoding",
    [
        Mistake(
            "sines and cosines in two blocks instead of interleaved",
            "the layout is interleaved: channel 2i holds the sine and channel 2i + 1 the cosine "
            "of the same angle; torch.stack((sin, cos), dim=-1).flatten(-2) does it",
            _sinusoidal_blocks,
        ),
        Mistake(
            "sine and cosine swapped",
            "even channels (0, 2, 4, ...) hold the sines, odd channels the cosines",
            _sinusoidal_swapped,
        ),
        Mistake(
            "the exponent uses the channel index instead of 2i",
            "both channels of pair i share one angle, pos / base ** (2i / d_model): channel 5 "
            "uses 2i = 4, not 5",
            _sinusoidal_channel_exponent,
        ),
    ],
)

LEARNED_MISTAKES = _register(
    "learned_positions",
    "LearnedPositionalEmbedding",
    [
        Mistake(
            "positions stored as a buffer, so they are never trained",
            "wrap the table in nn.Parameter so the optimizer sees it; a buffer is for fixed "
            "tables like the sinusoids",
            _LearnedAsBuffer,
        ),
        Mistake(
            "the last seq rows used instead of the first",
            "position p uses row p: add self.weight[:seq]",
            _LearnedLastRows,
        ),
        Mistake(
            "the input is not added",
            "return x + self.weight[:seq]: the position vectors are added to the embeddings",
            _LearnedPositionsOnly,
        ),
    ],
)

ROTARY_MISTAKES = _register(
    "apply_rotary",
    "apply_rotary",
    [
        Mistake(
            "channels paired as halves (i, i + d_head/2) instead of neighbours (2i, 2i+1)",
            "in this course pair i is channels 2i and 2i + 1 (x[..., 0::2] and x[..., 1::2]); "
            "the half-split layout of some libraries is also a rotation, but not this one",
            _rotary_half_split,
        ),
        Mistake(
            "rotation in the wrong direction",
            "turn counter-clockwise: out[2i] = x[2i] cos - x[2i+1] sin, "
            "out[2i+1] = x[2i] sin + x[2i+1] cos",
            _rotary_clockwise,
        ),
        Mistake(
            "the frequency exponent uses i instead of 2i",
            "pair i turns at base ** (-2i / d_head); with i alone the slow pairs turn too fast",
            _rotary_pair_exponent,
        ),
    ],
)


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def check_sinusoidal_encoding(fn, cases=None) -> None:
    """Check ``sinusoidal_encoding(seq, d_model, base=10000.0) -> float32 (seq, d_model)``."""
    default = [
        Case((4, 6), label="4 positions, 6 channels"),
        Case((50, 16), label="50 positions"),
        Case((10, 8), {"base": 100.0}, label="base=100"),
        Case((3, 7), label="odd d_model must raise ValueError"),
    ]
    check_function(
        outcome(fn),
        outcome(ref_sinusoidal_encoding),
        _cases(cases, default),
        name="sinusoidal_encoding",
        compare=compare_outcomes,
        mistakes=[Mistake(m.name, m.hint, outcome(m.impl)) for m in SINUSOIDAL_MISTAKES],
    )


def check_learned_positions(cls, cases=None) -> None:
    """Check ``LearnedPositionalEmbedding(max_seq, d_model)``; a case is (max_seq, d_model, x)."""
    if not isinstance(cls, type):
        fail(f"LearnedPositionalEmbedding should be a class, got {cls!r:.60}")
    default = [
        Case((8, 4, _randn(2, 5, 4, seed=1, dtype=torch.float32)), label="5 of 8 positions"),
        Case((6, 3, _randn(1, 6, 3, seed=2, dtype=torch.float32)), label="every position"),
        Case(
            (4, 2, _randn(3, 6, 2, seed=3, dtype=torch.float32)),
            label="longer than max_seq must raise ValueError",
        ),
    ]
    check_function(
        _learned_probe(cls),
        _learned_probe(LearnedPositionalEmbedding),
        _cases(cases, default),
        name="LearnedPositionalEmbedding",
        compare=compare_outcomes,
        mistakes=[Mistake(m.name, m.hint, _learned_probe(m.impl)) for m in LEARNED_MISTAKES],
    )


def _check_relative_scores(fn: Callable) -> None:
    """A rotated query and key score the same whenever their distance is the same."""
    gen = torch.Generator().manual_seed(9)
    q = torch.randn(1, 16, generator=gen, dtype=torch.float64)  # (seq=1, d_head)
    k = torch.randn(1, 16, generator=gen, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        rq, rk = fn(q, torch.tensor([m])), fn(k, torch.tensor([n]))
        return float((rq * rk).sum())

    for m, n, shift in [(0, 5, 11), (9, 2, 40), (3, 3, 100)]:
        before, after = score(m, n), score(m + shift, n + shift)
        if not math.isclose(before, after, rel_tol=1e-6, abs_tol=1e-9):
            fail(
                "the score of a rotated query at position m and a rotated key at position n "
                f"should depend only on m - n: positions ({m}, {n}) give {before:.6f} but "
                f"({m + shift}, {n + shift}) give {after:.6f}"
            )


def check_apply_rotary(fn, cases=None) -> None:
    """Check the property that scores depend on distance only, then ``apply_rotary`` itself."""
    default = [
        Case((_randn(2, 6, 8, seed=1),), label="float64, positions 0..5"),
        Case((_randn(3, 5, 4, seed=2, dtype=torch.float32),), label="float32"),
        Case((_randn(2, 4, 6, seed=3), torch.tensor([7, 8, 9, 10])), label="positions 7..10"),
        Case(
            (_randn(1, 2, 5, 8, seed=4),),
            {"base": 100.0},
            label="(batch, n_heads, seq, d_head), base=100",
        ),
        Case((_randn(2, 3, 5, seed=5),), label="odd d_head must raise ValueError"),
    ]
    cases = _cases(cases, default)
    _check_relative_scores(fn)
    check_function(
        outcome(fn),
        outcome(ref_apply_rotary),
        cases,
        name="apply_rotary",
        compare=compare_outcomes,
        mistakes=[Mistake(m.name, m.hint, outcome(m.impl)) for m in ROTARY_MISTAKES],
        verified=f"{len(cases)} cases, and a rotated query-key score depends only "
        "on the distance m - n",
    )
