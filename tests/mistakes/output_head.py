"""Wrong answers to notebook 10 that the checks cannot name but must fail."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import Mistake
from course_lib.exercises.output_head import RefTiedHead
from course_lib.head import cross_entropy, next_token_loss
from course_lib.sampling import KVCache, filter_top_p


def _probs_as_log_probs(h, weight, bias):
    logits = F.linear(h, weight, bias)
    return logits, torch.log_softmax(logits, dim=-1)


class _TiedHeadWithBias(RefTiedHead):
    # Right logits at the start, but a parameter of its own that tying should not add.
    def __init__(self, embedding):
        super().__init__(embedding)
        self.bias = nn.Parameter(torch.zeros(embedding.weight.shape[0]))

    def forward(self, h):
        return super().forward(h) + self.bias


def _ce_default_ignore_only(logits, targets, ignore_index=-100):
    return cross_entropy(logits, targets)  # the argument is accepted and then forgotten


def _ppl_as_tensor(logits, ids):
    return torch.exp(next_token_loss(logits, ids))


def _probs_top_k_beyond_vocab(logits, temperature=1.0, top_k=None, top_p=None):
    if temperature == 0:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    z = logits / temperature
    if top_k is not None:  # torch.topk raises when k exceeds the vocabulary
        z = z.masked_fill(z < torch.topk(z, top_k, dim=-1).values[..., -1:], float("-inf"))
    if top_p is not None:
        z = filter_top_p(z, top_p)
    return torch.softmax(z, dim=-1)


def _probs_top_p_before_top_k(logits, temperature=1.0, top_k=None, top_p=None):
    if temperature == 0:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    z = logits / temperature
    if top_p is not None:
        z = filter_top_p(z, top_p)
    if top_k is not None:
        k = min(top_k, z.shape[-1])
        z = z.masked_fill(z < torch.topk(z, k, dim=-1).values[..., -1:], float("-inf"))
    return torch.softmax(z, dim=-1)


class _CacheValuesFromKeys(KVCache):
    def update(self, layer, k, v):
        keys, _ = super().update(layer, k, v)
        return keys, keys


EXTRA_MISTAKES = {
    "head_probs": [Mistake("log-probabilities instead of probabilities", "", _probs_as_log_probs)],
    "tied_head": [Mistake("a bias of its own added to the tied head", "", _TiedHeadWithBias)],
    "cross_entropy": [Mistake("only ignore_index=-100 is honoured", "", _ce_default_ignore_only)],
    "next_token_perplexity": [Mistake("a tensor returned instead of a float", "", _ppl_as_tensor)],
    "next_token_probs": [
        Mistake("top_k larger than the vocabulary crashes", "", _probs_top_k_beyond_vocab),
        Mistake("top-p applied before top-k", "", _probs_top_p_before_top_k),
    ],
    "kv_cache": [Mistake("the values returned are the keys", "", _CacheValuesFromKeys)],
}
