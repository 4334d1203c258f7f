"""Wrong answers to notebook 04 that the checks cannot name but must fail."""

from __future__ import annotations

import math

import torch

from course_lib.attention import causal_mask, padding_mask, scaled_dot_product_attention
from course_lib.checks import Mistake


def _softmax_global_max(x, dim=-1):
    # One maximum for the whole tensor: rows far below it underflow to 0 / 0.
    exp = torch.exp(x - x.max())
    return exp / exp.sum(dim=dim, keepdim=True)


def _softmax_detached_sum(x, dim=-1):
    # Right values, wrong gradient: the normaliser is treated as a constant.
    shift = x.detach().amax(dim=dim, keepdim=True).nan_to_num(neginf=0.0)
    exp = torch.exp(x - shift)
    total = exp.sum(dim=dim, keepdim=True).detach()
    return exp / torch.where(total > 0, total, torch.ones_like(total))


def _attention_scaled_by_d_model(q, k, v):
    # For (batch, n_heads, seq, d_head) inputs: the scale of n_heads * d_head.
    d_model = q.shape[-1] * (q.shape[-3] if q.dim() >= 4 else 1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_model), dim=-1)
    return weights @ v, weights


def _attention_returns_scores(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v, scores


def _causal_as_floats(seq_q, seq_k=None):
    return causal_mask(seq_q, seq_k).float()


def _padding_as_ints(lengths, seq):
    return padding_mask(lengths, seq).long()


def _masked_ignores_mask(q, k, v, mask=None):
    return scaled_dot_product_attention(q, k, v)


EXTRA_MISTAKES = {
    "softmax": [
        Mistake("one maximum for the whole tensor", "", _softmax_global_max),
        Mistake("the sum is detached", "", _softmax_detached_sum),
    ],
    "attention": [
        Mistake("scaled by sqrt(d_model) for 4-D inputs", "", _attention_scaled_by_d_model),
        Mistake("scores returned instead of weights", "", _attention_returns_scores),
    ],
    "causal_mask": [Mistake("a float mask", "", _causal_as_floats)],
    "padding_mask": [Mistake("an integer mask", "", _padding_as_ints)],
    "scaled_dot_product_attention": [Mistake("the mask is ignored", "", _masked_ignores_mask)],
}
