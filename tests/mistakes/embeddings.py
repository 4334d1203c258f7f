"""Wrong answers to notebook 02 that the checks cannot name but must fail."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib.checks import Mistake
from course_lib.embedding import Embedding


def _one_hot_flattened(ids, weight):
    # The one-hot rows of a batch are never reshaped back to the shape of the ids.
    return F.one_hot(ids.flatten(), weight.shape[0]).to(weight.dtype) @ weight


def _one_hot_product_transposed(ids, weight):
    # weight^T times the one-hot columns: the result is (d_model, tokens), not (tokens, d_model).
    one_hot = F.one_hot(ids, weight.shape[0]).to(weight.dtype).reshape(-1, weight.shape[0])
    return weight.T @ one_hot.T


class _EmbeddingSmallInit(Embedding):
    """Initialised like GPT-2, N(0, 0.02^2), when the exercise asks for N(0, 1)."""

    def __init__(self, vocab, d_model, padding_idx=None):
        super().__init__(vocab, d_model, padding_idx)
        with torch.no_grad():
            self.weight.mul_(0.02)


def _neighbours_as_tensor(weight, index, k):
    unit = F.normalize(weight, dim=-1)
    similarity = unit @ unit[index]
    similarity[index] = float("-inf")
    return similarity.argsort(descending=True)[:k]


EXTRA_MISTAKES = {
    "one_hot_embed": [
        Mistake("the batch shape is lost", "", _one_hot_flattened),
        Mistake("the product comes out transposed", "", _one_hot_product_transposed),
    ],
    "embedding": [Mistake("initialised with standard deviation 0.02", "", _EmbeddingSmallInit)],
    "nearest_neighbours": [Mistake("a tensor instead of a list", "", _neighbours_as_tensor)],
}
