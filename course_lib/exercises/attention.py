"""Checks for notebook 04, scaled dot-product attention.

The references are ``course_lib.attention`` (itself tested against
``torch.nn.functional.scaled_dot_product_attention``), and the attention checks also compare
with torch directly. Masks are bool with True = may attend. Checks that take gradients run
the learner's function on fresh leaf tensors and report the gradients next to the outputs, so
that an answer which is right forward but NaN backward fails too.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from course_lib.attention import (
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
)
from course_lib.checks import Case, Mistake, check_function, describe_difference, fail, passed
from course_lib.exercises import Exercise

# ----------------------------------------------------------------------------------------------
# Probes: run a function and collect what the check compares (outputs and gradients)
# ----------------------------------------------------------------------------------------------


def _upstream(shape: torch.Size, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A fixed random gradient to send back through an output."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _softmax_probe(fn: Callable) -> Callable:
    """Wrap a softmax so it returns its output and the gradient of its input."""

    def probe(x: torch.Tensor, dim: int = -1) -> dict:
        x = x.clone().requires_grad_(True)
        y = fn(x, dim=dim)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or not y.requires_grad:
            return {"output": y}
        (y * _upstream(y.shape, y.dtype, 0)).sum().backward()
        return {"output": y.detach(), "gradient of x": x.grad}

    return probe


def _attention_probe(fn: Callable, with_mask: bool) -> Callable:
    """Wrap an attention function so it returns output, weights and the gradients of q, k, v."""

    def probe(q, k, v, mask=None) -> dict:
        q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
        result = fn(q, k, v, mask) if with_mask else fn(q, k, v)
        if not isinstance(result, tuple) or len(result) != 2:
            return {"(output, weights)": result}
        out, weights = result
        report = {"output": out, "weights": weights}
        tensors = isinstance(out, torch.Tensor) and isinstance(weights, torch.Tensor)
        if not tensors or not (out.requires_grad and weights.requires_grad):
            return report
        loss = (out * _upstream(out.shape, out.dtype, 1)).sum()
        loss = loss + (weights * _upstream(weights.shape, weights.dtype, 2)).sum()
        loss.backward()
        report = {"output": out.detach(), "weights": weights.detach()}
        report.update({"gradient of q": q.grad, "gradient of k": k.grad, "gradient of v": v.grad})
        return report

    return probe


def _wrap(mistakes: list[Mistake], probe: Callable[[Callable], Callable]) -> list[Mistake]:
    """The same mistakes, each run through ``probe`` like the learner's function."""
    return [Mistake(m.name, m.hint, probe(m.impl)) for m in mistakes]


# ----------------------------------------------------------------------------------------------
# References, in the exact form the notebook asks for
# ----------------------------------------------------------------------------------------------


def ref_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return softmax(x, dim=dim)


def ref_attention(q, k, v):
    return scaled_dot_product_attention(q, k, v)


def ref_causal_mask(seq_q: int, seq_k: int | None = None) -> torch.Tensor:
    return causal_mask(seq_q, seq_k)


def ref_padding_mask(lengths: torch.Tensor, seq: int) -> torch.Tensor:
    return padding_mask(lengths, seq)


def ref_masked_attention(q, k, v, mask=None):
    return scaled_dot_product_attention(q, k, v, mask)


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


def _softmax_nan_on_empty_rows(x, dim=-1):
    exp = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return exp / exp.sum(dim=dim, keepdim=True)


def _softmax_no_shift(x, dim=-1):
    exp = torch.exp(x)
    return exp / exp.sum(dim=dim, keepdim=True)


def _softmax_last_axis_always(x, dim=-1):
    return softmax(x, dim=-1)


def _softmax_global_max(x, dim=-1):
    exp = torch.exp(x - x.max())
    return exp / exp.sum(dim=dim, keepdim=True)


def _scores(q, k, scale):
    return q @ k.transpose(-2, -1) / scale


def _attention_divided_by_d_head(q, k, v):
    weights = torch.softmax(_scores(q, k, q.shape[-1]), dim=-1)
    return weights @ v, weights


def _attention_softmax_over_queries(q, k, v):
    weights = torch.softmax(_scores(q, k, math.sqrt(q.shape[-1])), dim=-2)
    return weights @ v, weights


def _attention_unscaled(q, k, v):
    weights = torch.softmax(_scores(q, k, 1.0), dim=-1)
    return weights @ v, weights


def _attention_scaled_by_value_width(q, k, v):
    weights = torch.softmax(_scores(q, k, math.sqrt(v.shape[-1])), dim=-1)
    return weights @ v, weights


def _causal_hides_diagonal(seq_q, seq_k=None):
    return causal_mask(seq_q, seq_k) & ~_diagonal(seq_q, seq_k)


def _diagonal(seq_q, seq_k=None):
    seq_k = seq_q if seq_k is None else seq_k
    return (torch.arange(seq_k) == torch.arange(seq_q).unsqueeze(1) + (seq_k - seq_q)).bool()


def _causal_inverted(seq_q, seq_k=None):
    return ~causal_mask(seq_q, seq_k)


def _causal_upper(seq_q, seq_k=None):
    return ~causal_mask(seq_q, seq_k) | _diagonal(seq_q, seq_k)


def _causal_top_left(seq_q, seq_k=None):
    seq_k = seq_q if seq_k is None else seq_k
    return torch.ones(seq_q, seq_k, dtype=torch.bool).tril()


def _padding_inverted(lengths, seq):
    return ~padding_mask(lengths, seq)


def _padding_no_query_axis(lengths, seq):
    return padding_mask(lengths, seq)[:, 0]


def _padding_off_by_one(lengths, seq):
    return (torch.arange(seq) <= lengths.unsqueeze(1)).unsqueeze(1)


def _padding_hides_queries(lengths, seq):
    return padding_mask(lengths, seq).transpose(1, 2)


def _masked_after_softmax(q, k, v, mask=None):
    weights = torch.softmax(_scores(q, k, math.sqrt(q.shape[-1])), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


def _masked_inverted(q, k, v, mask=None):
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights


def _masked_large_negative(q, k, v, mask=None):
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _masked_and_renormalised(q, k, v, mask=None):
    weights = torch.softmax(_scores(q, k, math.sqrt(q.shape[-1])), dim=-1)
    if mask is not None:
        weights = weights * mask
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v, weights


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


SOFTMAX_MISTAKES = _register(
    "softmax",
    "softmax",
    [
        Mistake(
            "a row of all -inf gives NaN",
            "when every entry of a row is -inf, the maximum is -inf and x - max is NaN; "
            "subtract 0 instead for such rows (torch.where on torch.isfinite(max)), and "
            "divide by 1 where the sum is 0",
            _softmax_nan_on_empty_rows,
        ),
        Mistake(
            "the maximum is not subtracted, so large scores overflow",
            "exp(1000.0) is inf and inf / inf is NaN: subtract the largest value along dim "
            "first (keepdim=True); the result is the same, since softmax ignores a shift",
            _softmax_no_shift,
        ),
        Mistake(
            "the softmax is always taken over the last axis",
            "use the dim argument for the maximum and the sum, with keepdim=True",
            _softmax_last_axis_always,
        ),
    ],
)

ATTENTION_MISTAKES = _register(
    "attention",
    "attention",
    [
        Mistake(
            "scores divided by d_head instead of sqrt(d_head)",
            "divide by math.sqrt(d_head): a dot product of d_head unit-variance terms has a "
            "standard deviation of sqrt(d_head)",
            _attention_divided_by_d_head,
        ),
        Mistake(
            "softmax over the queries instead of the keys",
            "each query's weights must sum to one over the keys: softmax over the last axis "
            "(dim=-1) of the (..., seq_q, seq_k) scores",
            _attention_softmax_over_queries,
        ),
        Mistake(
            "scores not scaled",
            "divide the scores by math.sqrt(d_head), the width of the queries and keys",
            _attention_unscaled,
        ),
        Mistake(
            "scores scaled by the width of the values",
            "the scale comes from the width the dot product sums over, q.shape[-1] (d_head), "
            "not from v",
            _attention_scaled_by_value_width,
        ),
    ],
)

CAUSAL_MISTAKES = _register(
    "causal_mask",
    "causal_mask",
    [
        Mistake(
            "the causal mask also hides the diagonal",
            "a query may attend to its own position: keep the diagonal (key <= query, not <)",
            _causal_hides_diagonal,
        ),
        Mistake(
            "mask polarity inverted",
            "in this course True means 'may attend': True on and below the diagonal",
            _causal_inverted,
        ),
        Mistake(
            "the upper triangle instead of the lower",
            "row = query, column = key; query i may see keys 0 .. i, the past, not the future",
            _causal_upper,
        ),
        Mistake(
            "the triangle starts at the top-left corner when there are more keys than queries",
            "with seq_k > seq_q the queries are the last seq_q positions: query i sits at "
            "position i + seq_k - seq_q and sees every key up to there",
            _causal_top_left,
        ),
    ],
)

PADDING_MISTAKES = _register(
    "padding_mask",
    "padding_mask",
    [
        Mistake(
            "mask polarity inverted (True marks the padding)",
            "that is nn.MultiheadAttention's key_padding_mask convention; here True means "
            "'a real key that may be attended to'",
            _padding_inverted,
        ),
        Mistake(
            "missing the query axis: shape (batch, seq)",
            "add a dimension of size one in the middle, (batch, 1, seq), so the mask broadcasts "
            "over the queries of (batch, seq_q, seq_k) scores",
            _padding_no_query_axis,
        ),
        Mistake(
            "off by one: the position equal to the length is kept",
            "a sequence of length L has real positions 0 .. L - 1: use position < length",
            _padding_off_by_one,
        ),
        Mistake(
            "mask of shape (batch, seq, 1), which hides queries instead of keys",
            "padding hides keys, the last axis of the scores: shape (batch, 1, seq)",
            _padding_hides_queries,
        ),
    ],
)

MASKED_MISTAKES = _register(
    "scaled_dot_product_attention",
    "scaled_dot_product_attention",
    [
        Mistake(
            "mask applied after the softmax",
            "zeroing weights after the softmax leaves rows that no longer sum to one; put -inf "
            "in the hidden scores before the softmax",
            _masked_after_softmax,
        ),
        Mistake(
            "mask polarity inverted",
            "True means 'may attend': fill the scores where the mask is False (~mask) with -inf",
            _masked_inverted,
        ),
        Mistake(
            "hidden scores set to a large negative number instead of -inf",
            "with -1e9 a row whose keys are all hidden gets uniform weights, not zeros; use "
            "float('-inf') with a softmax that turns an all -inf row into zeros",
            _masked_large_negative,
        ),
        Mistake(
            "weights masked and renormalised after the softmax",
            "this works until every key of a row is hidden: then the row is 0 / 0 = NaN; mask "
            "the scores with -inf before a softmax that turns an all -inf row into zeros "
            "(yours, from exercise 1)",
            _masked_and_renormalised,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def make_qkv(
    *batch: int,
    seq_q: int = 4,
    seq_k: int | None = None,
    d_head: int = 8,
    d_v: int | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return seeded random queries, keys and values.

    Shapes: q (*batch, seq_q, d_head), k (*batch, seq_k, d_head), v (*batch, seq_k, d_v);
    ``seq_k`` defaults to ``seq_q`` and ``d_v`` to ``d_head``.
    """
    seq_k = seq_q if seq_k is None else seq_k
    d_v = d_head if d_v is None else d_v
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, seq_q, d_head, generator=gen, dtype=dtype)
    k = torch.randn(*batch, seq_k, d_head, generator=gen, dtype=dtype)
    v = torch.randn(*batch, seq_k, d_v, generator=gen, dtype=dtype)
    return q, k, v


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def _compare_quietly(*args, **kwargs) -> None:
    """``check_function`` without its success line, for checks that test more afterwards."""
    with contextlib.redirect_stdout(io.StringIO()):
        check_function(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Property checks every attention answer gets
# ----------------------------------------------------------------------------------------------


def _check_torch_agrees(fn: Callable, name: str, with_mask: bool) -> None:
    """Compare with torch.nn.functional.scaled_dot_product_attention on fresh inputs."""
    q, k, v = make_qkv(2, 3, seq_q=6, d_head=8, d_v=5, seed=11)
    masks = [None]
    if with_mask:
        lengths = torch.tensor([6, 4])
        masks += [causal_mask(6), causal_mask(6) & padding_mask(lengths, 6).unsqueeze(1)]
    for mask in masks:
        got = fn(q, k, v, mask)[0] if with_mask else fn(q, k, v)[0]
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        difference = describe_difference(expected, got, "the output")
        if difference:
            what = "no mask" if mask is None else f"a mask of shape {tuple(mask.shape)}"
            fail(
                f"{name} disagrees with torch.nn.functional.scaled_dot_product_attention "
                f"with {what}: {difference}"
            )


def _check_mask_properties(fn: Callable, name: str) -> None:
    """Weights form a distribution over visible keys; hidden positions change nothing."""
    q, k, v = make_qkv(3, seq_q=7, d_head=4, seed=12)
    lengths = torch.tensor([7, 5, 2])
    mask = causal_mask(7) & padding_mask(lengths, 7)  # (3, 7, 7)
    out, weights = fn(q, k, v, mask)

    # Weights: non-negative, zero on hidden keys, summing to one over the visible keys.
    if (weights < 0).any():
        fail(f"{name} returned negative attention weights; a softmax is never negative")
    if weights.masked_select(~mask).abs().max() > 0:
        fail(f"{name} gives weight to keys the mask hides (mask True = may attend)")
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-9):
        fail(f"{name}'s weights do not sum to one over the visible keys; sums: {sums.tolist()}")

    # Causal: a later token (query, key or value) never changes an earlier output.
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, 4:], k2[:, 4:], v2[:, 4:] = 3.0, -2.0, 5.0
    out2, _ = fn(q2, k2, v2, causal_mask(7))
    first, _ = fn(q, k, v, causal_mask(7))
    if not torch.allclose(first[:, :4], out2[:, :4], atol=1e-12):
        fail(
            f"with a causal mask, changing positions 4 and later changed an earlier output "
            f"of {name}: the future leaks into the past"
        )

    # Padding: a padded position never changes the output of a real query.
    k3, v3 = k.clone(), v.clone()
    k3[2, 2:], v3[2, 2:] = 7.0, -7.0
    out3, _ = fn(q, k3, v3, mask)
    if not torch.allclose(out[2, :2], out3[2, :2], atol=1e-12):
        fail(
            f"with a padding mask, changing padded keys or values changed the output of a real "
            f"position of {name}"
        )


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


_BIG = torch.tensor([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]])
_INF = float("-inf")
_WITH_INF = torch.tensor([[0.5, _INF, 1.5, 0.0], [_INF, _INF, _INF, _INF], [2.0, 1.0, _INF, _INF]])


def check_softmax(fn, cases=None) -> None:
    """Check ``softmax(x, dim=-1)``: outputs and gradients, large and -inf scores included."""
    gen = torch.Generator().manual_seed(0)
    default = [
        Case((_BIG,), label="large scores"),
        Case((torch.randn(3, 4, 5, generator=gen, dtype=torch.float64),), label="3-D, last axis"),
        Case((torch.randn(4, 3, generator=gen, dtype=torch.float64), 0), label="dim=0"),
        Case((_WITH_INF,), label="-inf entries and a row of all -inf"),
    ]
    check_function(
        _softmax_probe(fn),
        _softmax_probe(ref_softmax),
        _cases(cases, default),
        name="softmax",
        mistakes=_wrap(SOFTMAX_MISTAKES, _softmax_probe),
    )


def check_attention(fn, cases=None) -> None:
    """Check ``attention(q, k, v) -> (output, weights)`` without a mask, against torch."""
    default = [
        Case(make_qkv(1, seq_q=3, d_head=4, seed=1), label="one sequence"),
        Case(
            make_qkv(2, seq_q=4, seq_k=6, d_head=16, d_v=4, seed=2),
            label="more keys than queries, d_v != d_head",
        ),
        Case(
            make_qkv(2, 3, seq_q=5, d_head=8, seed=3, dtype=torch.float32),
            label="(batch, n_heads, seq, d_head) in float32",
        ),
    ]
    cases = _cases(cases, default)
    _compare_quietly(
        _attention_probe(fn, False),
        _attention_probe(ref_attention, False),
        cases,
        name="attention",
        mistakes=_wrap(ATTENTION_MISTAKES, lambda f: _attention_probe(f, False)),
    )
    _check_torch_agrees(fn, "attention", with_mask=False)
    passed(
        f"attention: outputs, weights and gradients match the reference on {len(cases)} "
        "cases and torch.nn.functional.scaled_dot_product_attention."
    )


def check_causal_mask(fn, cases=None) -> None:
    """Check ``causal_mask(seq_q, seq_k=None) -> bool (seq_q, seq_k)``."""
    default = [
        Case((4,), label="4 x 4"),
        Case((1,), label="a single position"),
        Case((2, 5), label="2 queries after 3 earlier keys"),
        Case((6, 6), label="seq_k given and equal"),
    ]
    check_function(
        fn, ref_causal_mask, _cases(cases, default), name="causal_mask", mistakes=CAUSAL_MISTAKES
    )


def check_padding_mask(fn, cases=None) -> None:
    """Check ``padding_mask(lengths, seq) -> bool (batch, 1, seq)``."""
    default = [
        Case((torch.tensor([3, 1, 4]), 4), label="three sequences"),
        Case((torch.tensor([0, 2]), 3), label="an empty sequence"),
        Case((torch.tensor([5]), 5), label="no padding"),
    ]
    check_function(
        fn,
        ref_padding_mask,
        _cases(cases, default),
        name="padding_mask",
        mistakes=PADDING_MISTAKES,
    )


def check_scaled_dot_product_attention(fn, cases=None) -> None:
    """Check masked attention: outputs, weights and gradients; torch; mask properties."""
    q, k, v = make_qkv(2, seq_q=4, d_head=4, seed=4)
    default = [
        Case((*make_qkv(1, seq_q=4, d_head=4, seed=5), causal_mask(4)), label="causal"),
        Case(
            (q, k, v, padding_mask(torch.tensor([3, 0]), 4)),
            label="padding, one sequence all padding",
        ),
        Case(make_qkv(2, seq_q=3, seq_k=5, d_head=4, d_v=2, seed=6), label="no mask"),
        Case(
            (
                *make_qkv(2, 2, seq_q=5, d_head=4, seed=7),
                causal_mask(5) & padding_mask(torch.tensor([5, 2]), 5).unsqueeze(1),
            ),
            label="causal and padding, (batch, n_heads, seq, d_head)",
        ),
    ]
    name = "scaled_dot_product_attention"
    cases = _cases(cases, default)
    _compare_quietly(
        _attention_probe(fn, True),
        _attention_probe(ref_masked_attention, True),
        cases,
        name=name,
        mistakes=_wrap(MASKED_MISTAKES, lambda f: _attention_probe(f, True)),
    )
    _check_torch_agrees(fn, name, with_mask=True)
    _check_mask_properties(fn, name)
    passed(
        f"{name}: matches the reference on {len(cases)} cases (gradients included) and "
        "torch's attention; weights sum to one over visible keys; the future and the "
        "padding never leak."
    )
