"""Checks for notebook 02, input embeddings.

The references are ``course_lib.embedding``. The embedding layer is a class, so its check
runs a *probe*: it builds the learner's layer, records what can be told about its
initialisation (shape, padding row, the spread of the weights), then loads fixed weights and
compares the output and the gradient of the weights with the reference layer's. Known
mistakes are classes too and go through the same probe, so the check can name them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from course_lib.checks import Case, Mistake, check_function, fail
from course_lib.embedding import Embedding, nearest_neighbours, one_hot_embed
from course_lib.exercises import Exercise

# ----------------------------------------------------------------------------------------------
# References, in the exact form the notebook asks for
# ----------------------------------------------------------------------------------------------


def ref_one_hot_embed(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return one_hot_embed(ids, weight)


def ref_nearest_neighbours(weight: torch.Tensor, index: int, k: int) -> list[int]:
    return nearest_neighbours(weight, index, k)


# Below this many entries the spread of the initial weights is too noisy to judge.
_MIN_ENTRIES_FOR_INIT = 2000


def _embedding_probe(cls: Callable) -> Callable:
    """Wrap an embedding class into a function of (vocab, d_model, padding_idx, ids)."""

    def probe(vocab: int, d_model: int, padding_idx: int | None = None, ids=None) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = cls(vocab, d_model, padding_idx=padding_idx)
        if not isinstance(module, nn.Module):
            fail(f"Embedding(...) should build an nn.Module, got {type(module).__name__}")
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            fail("the layer needs a parameter named weight: self.weight = nn.Parameter(...)")

        # What the initialisation shows: shape, padding row, spread of the values.
        report: dict = {"shape of weight": tuple(weight.shape)}
        if tuple(weight.shape) != (vocab, d_model):
            return report
        if padding_idx is not None:
            report["padding row is zero at the start"] = bool(weight[padding_idx].eq(0).all())
        if vocab * d_model >= _MIN_ENTRIES_FOR_INIT:
            values = weight.detach().double()
            near = abs(values.mean().item()) < 0.1 and abs(values.std().item() - 1.0) < 0.1
            report["initial weights have mean 0 and standard deviation 1"] = near

        # Fixed weights (padding row zero), then forward and backward.
        fixed = torch.randn(vocab, d_model, generator=torch.Generator().manual_seed(7))
        if padding_idx is not None:
            fixed[padding_idx] = 0.0
        with torch.no_grad():
            weight.copy_(fixed)
        out = module(ids)
        report["output"] = out
        if isinstance(out, torch.Tensor) and out.requires_grad:
            upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
            (out * upstream).sum().backward()
            report["output"] = out.detach()
            report["gradient of weight"] = weight.grad
        return report

    return probe


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


class _EmbeddingIgnoresPadding(nn.Module):
    def __init__(self, vocab, d_model, padding_idx=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab, d_model))

    def forward(self, ids):
        return self.weight[ids]


class _EmbeddingPaddingTrained(nn.Module):
    def __init__(self, vocab, d_model, padding_idx=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab, d_model))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx] = 0.0

    def forward(self, ids):
        return self.weight[ids]


class _EmbeddingUniformInit(Embedding):
    def __init__(self, vocab, d_model, padding_idx=None):
        super().__init__(vocab, d_model, padding_idx)
        with torch.no_grad():
            self.weight.copy_(torch.rand(vocab, d_model))
            if self.padding_idx is not None:
                self.weight[self.padding_idx] = 0.0


class _EmbeddingTransposed(nn.Module):
    def __init__(self, vocab, d_model, padding_idx=None):
        super().__init__()
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.randn(d_model, vocab))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[:, padding_idx] = 0.0

    def forward(self, ids):
        out = self.weight.T[ids]
        if self.padding_idx is not None:
            out = out * (ids != self.padding_idx).unsqueeze(-1)
        return out


def _one_hot_width_from_ids(ids, weight):
    return torch.nn.functional.one_hot(ids).to(weight.dtype) @ weight


def _one_hot_float32(ids, weight):
    return torch.nn.functional.one_hot(ids, weight.shape[0]).float() @ weight


def _one_hot_integers(ids, weight):
    return torch.nn.functional.one_hot(ids, weight.shape[0]) @ weight


def _unit(weight):
    return weight / weight.norm(dim=-1, keepdim=True)


def _neighbours_by_dot_product(weight, index, k):
    scores = weight @ weight[index]
    scores[index] = float("-inf")
    return scores.argsort(descending=True)[:k].tolist()


def _neighbours_include_self(weight, index, k):
    unit = _unit(weight)
    return (unit @ unit[index]).argsort(descending=True)[:k].tolist()


def _neighbours_least_similar(weight, index, k):
    unit = _unit(weight)
    scores = unit @ unit[index]
    scores[index] = float("inf")
    return scores.argsort()[:k].tolist()


def _neighbours_by_distance(weight, index, k):
    distance = (weight - weight[index]).norm(dim=-1)
    distance[index] = float("inf")
    return distance.argsort()[:k].tolist()


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


# Order matters where several mistakes raise the same error: the check names the first one
# that raises on the failing case, and the cases are ordered so that each is told apart.
ONE_HOT_MISTAKES = _register(
    "one_hot_embed",
    "one_hot_embed",
    [
        Mistake(
            "one-hot width taken from the ids instead of the vocabulary",
            "F.one_hot(ids) makes ids.max() + 1 columns; pass num_classes=weight.shape[0] so "
            "the one-hot vectors have vocab entries, even when the largest id is absent",
            _one_hot_width_from_ids,
        ),
        Mistake(
            "one-hot vectors made in float32 whatever the weight's dtype",
            "convert with .to(weight.dtype), not .float(): a float64 matrix needs float64 "
            "one-hot vectors",
            _one_hot_float32,
        ),
        Mistake(
            "one-hot vectors left as integers",
            "F.one_hot returns int64; convert it to the weight's dtype before the matrix product",
            _one_hot_integers,
        ),
    ],
)

EMBEDDING_MISTAKES = _register(
    "embedding",
    "Embedding",
    [
        Mistake(
            "padding_idx ignored",
            "with padding_idx set, zero that row of the weights at the start and stop its "
            "gradient, for example by multiplying the output by (ids != padding_idx)",
            _EmbeddingIgnoresPadding,
        ),
        Mistake(
            "the padding row is zero at the start but still trained",
            "zeroing the row in __init__ is not enough: self.weight[ids] sends gradient into "
            "it, and the optimizer moves it; also zero the output at padding positions so no "
            "gradient reaches the row",
            _EmbeddingPaddingTrained,
        ),
        Mistake(
            "weights initialised uniformly in [0, 1)",
            "torch.rand draws from [0, 1): mean 0.5 and standard deviation 0.29; use "
            "torch.randn for N(0, 1), as torch.nn.Embedding does",
            _EmbeddingUniformInit,
        ),
        Mistake(
            "weight stored as (d_model, vocab)",
            "one row per token: the weight has shape (vocab, d_model), and self.weight[ids] "
            "picks the rows",
            _EmbeddingTransposed,
        ),
    ],
)

NEIGHBOUR_MISTAKES = _register(
    "nearest_neighbours",
    "nearest_neighbours",
    [
        Mistake(
            "ranked by dot product instead of cosine similarity",
            "divide each row by its length first (or use F.cosine_similarity): a dot product "
            "favours long vectors whatever their direction",
            _neighbours_by_dot_product,
        ),
        Mistake(
            "the row itself is among its neighbours",
            "a vector is always most similar to itself; set its own similarity to -inf before "
            "sorting",
            _neighbours_include_self,
        ),
        Mistake(
            "least similar first",
            "sort by similarity in descending order (argsort(descending=True))",
            _neighbours_least_similar,
        ),
        Mistake(
            "ranked by Euclidean distance instead of cosine similarity",
            "cosine similarity compares directions only; the distance also counts the lengths",
            _neighbours_by_distance,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def spread_rows(vocab: int, d_model: int, seed: int) -> torch.Tensor:
    """Seeded random rows (vocab, d_model) whose lengths vary over two orders of magnitude."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(vocab, d_model, generator=gen, dtype=torch.float64)
    lengths = torch.exp(2.0 * torch.rand(vocab, 1, generator=gen, dtype=torch.float64) - 1.0)
    return rows * lengths


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def check_one_hot_embed(fn, cases=None) -> None:
    """Check ``one_hot_embed(ids, weight) -> (..., d_model)``: equals ``weight[ids]``."""
    gen = torch.Generator().manual_seed(0)
    w32 = torch.randn(5, 3, generator=gen)
    w64 = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    default = [
        Case((torch.tensor([4, 0, 2, 4]), w32), label="every id up to the last"),
        Case((torch.tensor([[1, 2], [0, 1]]), w32), label="a batch without the last id"),
        Case((torch.tensor([[6, 5, 6]]), w64), label="float64 weights"),
    ]
    check_function(
        fn,
        ref_one_hot_embed,
        _cases(cases, default),
        name="one_hot_embed",
        mistakes=ONE_HOT_MISTAKES,
    )


def check_embedding(cls, cases=None) -> None:
    """Check the ``Embedding(vocab, d_model, padding_idx=None)`` class.

    A case is ``Case((vocab, d_model), {"padding_idx": ..., "ids": ...})``: the layer is
    built from the first three, then run on ``ids``.
    """
    if not isinstance(cls, type):
        fail(f"Embedding should be a class (a subclass of nn.Module), got {cls!r:.60}")
    default = [
        Case((6, 3), {"ids": torch.tensor([[0, 5, 2], [2, 2, 1]])}, label="no padding"),
        Case(
            (6, 3),
            {"padding_idx": 0, "ids": torch.tensor([[3, 4, 0, 0], [1, 0, 0, 0]])},
            label="padding_idx=0",
        ),
        Case(
            (200, 16),
            {"padding_idx": 199, "ids": torch.tensor([5, 199, 17, 5])},
            label="a large table",
        ),
    ]
    check_function(
        _embedding_probe(cls),
        _embedding_probe(Embedding),
        _cases(cases, default),
        name="Embedding",
        mistakes=[Mistake(m.name, m.hint, _embedding_probe(m.impl)) for m in EMBEDDING_MISTAKES],
    )


def check_nearest_neighbours(fn, cases=None) -> None:
    """Check ``nearest_neighbours(weight, index, k) -> list[int]``."""
    default = [
        Case((spread_rows(10, 4, 1), 3, 4), label="rows of very different lengths"),
        Case((spread_rows(30, 8, 2), 0, 5), label="30 rows, first row"),
        Case((spread_rows(6, 2, 3), 5, 5), label="every other row"),
    ]
    check_function(
        fn,
        ref_nearest_neighbours,
        _cases(cases, default),
        name="nearest_neighbours",
        mistakes=NEIGHBOUR_MISTAKES,
    )
