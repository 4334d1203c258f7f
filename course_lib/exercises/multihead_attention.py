"""Checks for notebook 05, multi-head attention.

The references are ``course_lib.multihead``. The module exercise is compared with
:func:`course_lib.multihead.attention_head_by_head`, which runs every head on its own slice
of the projection weights and concatenates the results, so a module that scrambles heads and
positions with the wrong reshape cannot pass. The loading exercise is compared with
``torch.nn.MultiheadAttention`` itself.

Exercises on modules take the learner's class; the check builds it, copies seeded reference
weights into it (so both compute with the same numbers) and compares the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from course_lib import multihead as ref
from course_lib.attention import causal_mask, padding_mask, scaled_dot_product_attention, softmax
from course_lib.checks import Case, Mistake, check_function, fail
from course_lib.exercises import Exercise

__all__ = [
    "EXERCISES",
    "check_load_from_torch",
    "check_merge_heads",
    "check_multihead_attention",
    "check_repeat_kv_heads",
    "check_split_heads",
    "load_weights",
    "torch_attn_mask",
]


# ----------------------------------------------------------------------------------------------
# Helpers shared by the module checks
# ----------------------------------------------------------------------------------------------


def load_weights(module: object, reference: nn.Module, name: str) -> nn.Module:
    """Copy ``reference``'s parameters into the learner's ``module`` and return it.

    Fails with a message that lists the expected parameter names and shapes when the
    learner's module holds other parameters, so a wrongly named submodule is reported as
    such rather than as a wrong output.
    """
    if not isinstance(module, nn.Module):
        fail(f"{name}(...) should build a torch.nn.Module, got {type(module).__name__}")
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    got = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    if got != expected:
        missing = [key for key in expected if key not in got]
        extra = [key for key in got if key not in expected]
        resized = [
            f"{k} {got[k]} (expected {expected[k]})"
            for k in expected
            if k in got and got[k] != expected[k]
        ]
        details = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
                f"wrong shape: {', '.join(resized)}" if resized else "",
            )
            if part
        )
        fail(
            f"{name} should hold exactly these parameters (name: shape): "
            + ", ".join(f"{k}: {v}" for k, v in expected.items())
            + f". Yours differ: {details}. Use the submodule names given in the exercise."
        )
    module.load_state_dict(reference.state_dict())
    return module


def _check_class(cls: object, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"pass the class {name} itself (a torch.nn.Module subclass), got {cls!r}")


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)


def torch_attn_mask(mask: torch.Tensor | None, n_heads: int, seq_q: int) -> torch.Tensor | None:
    """Turn a course mask (True = may attend) into ``nn.MultiheadAttention``'s ``attn_mask``.

    torch hides where its mask is True, and takes a per-sequence mask as
    (batch * n_heads, seq_q, seq_k), head fastest.
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        return ~mask  # (seq_q, seq_k)
    batch, _, seq_k = mask.shape
    hidden = (~mask).expand(batch, seq_q, seq_k)  # (batch, seq_q, seq_k)
    return hidden.repeat_interleave(n_heads, dim=0)  # (batch * n_heads, seq_q, seq_k)


# ----------------------------------------------------------------------------------------------
# split_heads and merge_heads
# ----------------------------------------------------------------------------------------------


def _split_reshape_only(x, n_heads):
    batch, seq, d_model = x.shape
    return x.reshape(batch, n_heads, seq, d_model // n_heads)


def _split_heads_last(x, n_heads):
    batch, seq, d_model = x.shape
    return x.view(batch, seq, n_heads, d_model // n_heads)


def _split_interleaved(x, n_heads):
    batch, seq, d_model = x.shape
    return x.view(batch, seq, d_model // n_heads, n_heads).permute(0, 3, 1, 2)


def _merge_reshape_only(x):
    batch, n_heads, seq, d_head = x.shape
    return x.reshape(batch, seq, n_heads * d_head)


def _merge_view_after_transpose(x):
    batch, n_heads, seq, d_head = x.shape
    return x.transpose(1, 2).view(batch, seq, n_heads * d_head)


def _merge_interleaved(x):
    batch, n_heads, seq, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, seq, n_heads * d_head)


def _merge_summed(x):
    return x.sum(dim=1)


# ----------------------------------------------------------------------------------------------
# MultiHeadAttention: the solution as a learner writes it, and mistakes that change one step
# ----------------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """A correct module split into steps, so that each mistake below overrides one."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split(self, x):
        return ref.split_heads(x, self.n_heads)

    def merge(self, x):
        return ref.merge_heads(x)

    def head_mask(self, mask):
        return mask.unsqueeze(1) if mask is not None and mask.dim() == 3 else mask

    def attend(self, q, k, v, mask):
        return scaled_dot_product_attention(q, k, v, mask)[0]

    def forward(self, query, key=None, value=None, mask=None):
        key = query if key is None else key
        value = key if value is None else value
        q = self.split(self.q_proj(query))
        k = self.split(self.k_proj(key))
        v = self.split(self.v_proj(value))
        return self.out_proj(self.merge(self.attend(q, k, v, self.head_mask(mask))))


class _NoOutputProjection(_Attention):
    def forward(self, query, key=None, value=None, mask=None):
        key = query if key is None else key
        value = key if value is None else value
        q, k, v = (
            self.split(p(x))
            for p, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value))
        )
        return self.merge(self.attend(q, k, v, self.head_mask(mask)))


class _MergeWithoutTranspose(_Attention):
    def merge(self, x):
        return _merge_reshape_only(x)


class _ReshapeWithoutTranspose(_Attention):
    def split(self, x):
        return _split_reshape_only(x, self.n_heads)

    def merge(self, x):
        return _merge_reshape_only(x)


class _MaskWithoutHeadAxis(_Attention):
    def head_mask(self, mask):
        return mask


class _MaskInverted(_Attention):
    def head_mask(self, mask):
        mask = super().head_mask(mask)
        return None if mask is None else ~mask


class _ScaledByModelWidth(_Attention):
    def attend(self, q, k, v, mask):
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return softmax(scores) @ v


# ----------------------------------------------------------------------------------------------
# load_from_torch mistakes
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _load(module, torch_mha, *, order=(0, 1, 2), transpose=False, biases=True, out=True, dim=0):
    weights = torch_mha.in_proj_weight.chunk(3, dim=dim)
    projections = (module.q_proj, module.k_proj, module.v_proj)
    for proj, i in zip(projections, order, strict=True):
        proj.weight.copy_(weights[i].T if transpose else weights[i])
        if biases and torch_mha.in_proj_bias is not None:
            proj.bias.copy_(torch_mha.in_proj_bias.chunk(3)[i])
    if out:
        w = torch_mha.out_proj.weight
        module.out_proj.weight.copy_(w.T if transpose else w)
        if biases and torch_mha.out_proj.bias is not None:
            module.out_proj.bias.copy_(torch_mha.out_proj.bias)


def _load_transposed(module, torch_mha):
    _load(module, torch_mha, transpose=True)


def _load_without_biases(module, torch_mha):
    _load(module, torch_mha, biases=False)


def _load_without_out_proj(module, torch_mha):
    _load(module, torch_mha, out=False)


def _load_split_wrong_axis(module, torch_mha):
    _load(module, torch_mha, dim=1)


# ----------------------------------------------------------------------------------------------
# repeat_kv_heads mistakes
# ----------------------------------------------------------------------------------------------


def _repeat_tiled(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)


def _repeat_positions(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2)


def _repeat_channels(x, n_rep):
    return x.repeat_interleave(n_rep, dim=-1)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


SPLIT_MISTAKES = _register(
    "split_heads",
    "split_heads",
    [
        Mistake(
            "reshaped straight to (batch, n_heads, seq, d_head)",
            "a reshape keeps the memory order, so it mixes positions into the heads; view as "
            "(batch, seq, n_heads, d_head) first, then transpose(1, 2)",
            _split_reshape_only,
        ),
        Mistake(
            "the heads were left after the positions",
            "the result must be (batch, n_heads, seq, d_head): transpose(1, 2) after the view",
            _split_heads_last,
        ),
        Mistake(
            "channels dealt out to the heads in turn",
            "head h owns the contiguous channels h * d_head .. (h + 1) * d_head - 1: view the "
            "last axis as (n_heads, d_head), not (d_head, n_heads)",
            _split_interleaved,
        ),
    ],
)

MERGE_MISTAKES = _register(
    "merge_heads",
    "merge_heads",
    [
        Mistake(
            "heads merged without transposing back",
            "transpose(1, 2) to (batch, seq, n_heads, d_head) before reshaping to "
            "(batch, seq, d_model); a plain reshape mixes positions and heads",
            _merge_reshape_only,
        ),
        Mistake(
            "view() on a transposed tensor",
            "after transpose the memory is not contiguous, so view() refuses: use reshape() "
            "(or .contiguous().view())",
            _merge_view_after_transpose,
        ),
        Mistake(
            "heads merged in the wrong channel order",
            "head h must fill channels h * d_head .. (h + 1) * d_head - 1: move only the head "
            "axis next to d_head, keeping (n_heads, d_head) in that order",
            _merge_interleaved,
        ),
        Mistake(
            "heads summed instead of concatenated",
            "put the heads side by side (d_model = n_heads * d_head channels); do not add them",
            _merge_summed,
        ),
    ],
)

MHA_MISTAKES = _register(
    "multihead_attention",
    "MultiHeadAttention",
    [
        Mistake(
            "the output projection is forgotten",
            "apply self.out_proj to the merged heads: it is what lets the heads' outputs mix",
            _NoOutputProjection,
        ),
        Mistake(
            "heads merged without transposing back",
            "after attention the tensor is (batch, n_heads, seq, d_head); transpose(1, 2) "
            "before reshaping to (batch, seq, d_model)",
            _MergeWithoutTranspose,
        ),
        Mistake(
            "split and merged with reshapes and no transpose",
            "reshape(batch, n_heads, seq, d_head) is not the same as view(batch, seq, n_heads, "
            "d_head).transpose(1, 2): it gives each head a jumble of positions, so the result "
            "differs from running every head on its own slice of channels",
            _ReshapeWithoutTranspose,
        ),
        Mistake(
            "the padding mask was not given a head axis",
            "a (batch, 1, seq_k) mask lines its batch axis up with the heads; use "
            "mask.unsqueeze(1) to make it (batch, 1, 1, seq_k)",
            _MaskWithoutHeadAxis,
        ),
        Mistake(
            "the mask is inverted",
            "in this course True means 'may attend': pass the mask on as it is (it is torch's "
            "nn.MultiheadAttention that wants the opposite)",
            _MaskInverted,
        ),
        Mistake(
            "scores divided by sqrt(d_model) instead of sqrt(d_head)",
            "each head's dot products run over d_head channels, so scale by sqrt(d_head); "
            "scaled_dot_product_attention does it for you",
            _ScaledByModelWidth,
        ),
    ],
)

LOAD_MISTAKES = _register(
    "load_from_torch",
    "load_from_torch",
    [
        Mistake(
            "weights transposed",
            "nn.Linear and in_proj_weight both store (out_features, in_features): copy the "
            "blocks as they are, without .T",
            _load_transposed,
        ),
        Mistake(
            "the biases were not copied",
            "copy in_proj_bias (split in three like the weight) and out_proj.bias too",
            _load_without_biases,
        ),
        Mistake(
            "the output projection was not copied",
            "copy torch_mha.out_proj.weight and .bias into module.out_proj",
            _load_without_out_proj,
        ),
        Mistake(
            "in_proj_weight split along the wrong axis",
            "the three blocks are stacked along the rows: in_proj_weight.chunk(3, dim=0)",
            _load_split_wrong_axis,
        ),
    ],
)

REPEAT_MISTAKES = _register(
    "repeat_kv_heads",
    "repeat_kv_heads",
    [
        Mistake(
            "the heads were tiled instead of repeated in place",
            "x.repeat(1, n_rep, 1, 1) gives heads 0, 1, 0, 1; each head must be repeated next "
            "to itself (0, 0, 1, 1): use repeat_interleave",
            _repeat_tiled,
        ),
        Mistake(
            "repeated along the positions",
            "repeat along dim=1, the head axis of (batch, n_kv_heads, seq, d_head)",
            _repeat_positions,
        ),
        Mistake(
            "repeated along the channels",
            "repeat along dim=1, the head axis, not the last axis",
            _repeat_channels,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# Runners: build a module, give it the reference weights, run it
# ----------------------------------------------------------------------------------------------


def _mha_runner(cls: type) -> Callable[..., torch.Tensor]:
    def run(d_model, n_heads, query, key=None, value=None, mask=None, seed=0):
        torch.manual_seed(seed)
        reference = ref.MultiHeadAttention(d_model, n_heads)
        module = load_weights(cls(d_model, n_heads), reference, "MultiHeadAttention")
        with torch.no_grad():
            return module.eval()(query, key, value, mask=mask)

    return run


def _mha_head_by_head(d_model, n_heads, query, key=None, value=None, mask=None, seed=0):
    torch.manual_seed(seed)
    reference = ref.MultiHeadAttention(d_model, n_heads)
    with torch.no_grad():
        return ref.attention_head_by_head(reference, query, key, value, mask)


def _torch_mha(d_model: int, n_heads: int, bias: bool, seed: int) -> nn.MultiheadAttention:
    """A seeded torch module whose biases are random too (torch starts them at zero)."""
    torch.manual_seed(seed)
    module = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True)
    if bias:
        with torch.no_grad():
            module.in_proj_bias.normal_(0.0, 0.5)
            module.out_proj.bias.normal_(0.0, 0.5)
    return module.eval()


def _load_runner(fn: Callable) -> Callable[..., torch.Tensor]:
    def run(d_model, n_heads, query, key=None, value=None, mask=None, bias=True, seed=0):
        torch_mha = _torch_mha(d_model, n_heads, bias, seed)
        torch.manual_seed(seed + 1)
        module = ref.MultiHeadAttention(d_model, n_heads, bias=bias)
        fn(module, torch_mha)
        with torch.no_grad():
            return module.eval()(query, key, value, mask=mask)

    return run


def _torch_output(d_model, n_heads, query, key=None, value=None, mask=None, bias=True, seed=0):
    torch_mha = _torch_mha(d_model, n_heads, bias, seed)
    key = query if key is None else key
    value = key if value is None else value
    attn_mask = torch_attn_mask(mask, n_heads, query.shape[1])
    with torch.no_grad():
        return torch_mha(query, key, value, attn_mask=attn_mask, need_weights=False)[0]


def _wrap(mistakes: Sequence[Mistake], runner: Callable) -> list[Mistake]:
    return [Mistake(m.name, m.hint, runner(m.impl)) for m in mistakes]


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def check_split_heads(fn, cases=None) -> None:
    """Check ``split_heads``: (batch, seq, d_model) -> (batch, n_heads, seq, d_head)."""
    g = torch.Generator().manual_seed(50)
    default = [
        Case((torch.arange(2 * 3 * 8.0).view(2, 3, 8), 4), label="numbered channels"),
        Case((_randn(g, 2, 5, 12), 3), label="3 heads"),
        Case((_randn(g, 3, 4, 16), 4), label="as many heads as positions"),
        Case((_randn(g, 1, 2, 6), 1), label="one head"),
    ]
    check_function(
        fn, ref.split_heads, _cases(cases, default), name="split_heads", mistakes=SPLIT_MISTAKES
    )


def check_merge_heads(fn, cases=None) -> None:
    """Check ``merge_heads(x)``: (batch, n_heads, seq, d_head) -> (batch, seq, d_model)."""
    g = torch.Generator().manual_seed(51)
    default = [
        Case((torch.arange(2 * 4 * 3 * 2.0).view(2, 4, 3, 2),), label="numbered values"),
        Case((_randn(g, 2, 3, 5, 4),), label="3 heads"),
        Case((_randn(g, 1, 2, 2, 3),), label="as many heads as positions"),
        Case((_randn(g, 2, 1, 4, 5),), label="one head"),
    ]
    check_function(
        fn, ref.merge_heads, _cases(cases, default), name="merge_heads", mistakes=MERGE_MISTAKES
    )


def check_multihead_attention(cls, cases=None) -> None:
    """Check the class ``MultiHeadAttention(d_model, n_heads)`` and its forward.

    A case is ``Case((d_model, n_heads), {"query": ..., "key": ..., "value": ..., "mask": ...,
    "seed": ...})``: the check builds the class, copies seeded weights into it and compares
    ``module(query, key, value, mask=mask)`` with every head computed on its own.
    """
    _check_class(cls, "MultiHeadAttention")
    g = torch.Generator().manual_seed(52)
    x, memory, values = _randn(g, 2, 5, 16), _randn(g, 2, 7, 16), _randn(g, 2, 7, 16)
    x3 = _randn(g, 3, 5, 12)
    default = [
        Case((16, 4), {"query": x, "seed": 1}, label="self-attention"),
        Case((16, 4), {"query": x, "mask": causal_mask(5), "seed": 2}, label="causal mask"),
        Case(
            (12, 2),
            {"query": x3, "mask": padding_mask(torch.tensor([5, 3, 1]), 5), "seed": 3},
            label="padding mask",
        ),
        Case(
            (16, 2),
            {"query": x, "key": memory, "mask": padding_mask(torch.tensor([7, 4]), 7), "seed": 4},
            label="attention over another sequence",
        ),
        Case(
            (16, 8),
            {"query": x, "key": memory, "value": values, "seed": 5},
            label="separate values",
        ),
    ]
    cases = _cases(cases, default)
    labels = ", ".join(c.label for c in cases if c.label)
    check_function(
        _mha_runner(cls),
        _mha_head_by_head,
        cases,
        name="MultiHeadAttention",
        mistakes=_wrap(MHA_MISTAKES, _mha_runner),
        verified=f"{len(cases)} cases, computed head by head" + (f" ({labels})" if labels else ""),
    )


def check_load_from_torch(fn, cases=None) -> None:
    """Check ``load_from_torch(module, torch_mha)`` against torch's own output.

    A case is ``Case((d_model, n_heads), {"query": ..., "key": ..., "value": ..., "mask": ...,
    "bias": ..., "seed": ...})``: the check loads a seeded ``nn.MultiheadAttention`` (with
    random biases) into the course's ``MultiHeadAttention`` and compares the two outputs.
    """
    if not callable(fn):
        raise TypeError(f"pass the function load_from_torch itself, got {fn!r}")
    g = torch.Generator().manual_seed(53)
    x, memory = _randn(g, 2, 6, 16), _randn(g, 2, 9, 16)
    default = [
        Case((16, 4), {"query": x, "seed": 1}, label="self-attention"),
        Case((16, 4), {"query": x, "mask": causal_mask(6), "seed": 2}, label="causal mask"),
        Case(
            (16, 2),
            {"query": x, "key": memory, "seed": 3},
            label="attention over another sequence",
        ),
        Case(
            (16, 2),
            {"query": x, "key": memory, "mask": padding_mask(torch.tensor([9, 5]), 9), "seed": 4},
            label="another sequence with padding",
        ),
        Case((16, 4), {"query": x, "bias": False, "seed": 5}, label="no bias"),
    ]
    check_function(
        _load_runner(fn),
        _torch_output,
        _cases(cases, default),
        name="load_from_torch",
        mistakes=_wrap(LOAD_MISTAKES, _load_runner),
    )


def check_repeat_kv_heads(fn, cases=None) -> None:
    """Check ``repeat_kv_heads(x, n_rep)``: (batch, n_kv_heads, seq, d_head) ->
    (batch, n_kv_heads * n_rep, seq, d_head), each head repeated next to itself."""
    g = torch.Generator().manual_seed(54)
    default = [
        Case((torch.arange(2.0).view(1, 2, 1, 1), 3), label="two numbered heads"),
        Case((_randn(g, 2, 2, 3, 4), 2), label="2 groups of 2"),
        Case((_randn(g, 1, 1, 5, 4), 4), label="one shared head"),
        Case((_randn(g, 2, 3, 2, 2), 1), label="no repetition"),
    ]
    check_function(
        fn,
        ref.repeat_kv_heads,
        _cases(cases, default),
        name="repeat_kv_heads",
        mistakes=REPEAT_MISTAKES,
    )
