"""More wrong answers for notebook 06 that its graded cells must reject (not named by hints)."""

import torch.nn.functional as F

from course_lib.checks import Mistake
from course_lib.exercises.feedforward import (
    _FeedForward,
    _SwiGLU,
    ref_layer_parameter_count,
)


def _gelu_relu(x, approximate="none"):
    return F.relu(x)


class _FeedForwardNarrow(_FeedForward):
    def __init__(self, d_model, d_ff=None):
        super().__init__(d_model, 2 * d_model if d_ff is None else d_ff)


class _FeedForwardSiLU(_FeedForward):
    def act(self, h):
        return F.silu(h)


def _always_independent(module, x):
    return True


def _count_gpt2_small(d_model, d_ff):
    return ref_layer_parameter_count(768, 3072)


class _SwiGLUGelu(_SwiGLU):
    def hidden(self, x):
        return F.gelu(self.gate(x)) * self.up(x)


class _SwiGLUSummed(_SwiGLU):
    def hidden(self, x):
        return F.silu(self.gate(x)) + self.up(x)


EXTRA_MISTAKES = {
    "gelu": [Mistake("ReLU", "", _gelu_relu)],
    "feed_forward": [
        Mistake("default d_ff of 2 * d_model", "", _FeedForwardNarrow),
        Mistake("SiLU instead of GELU", "", _FeedForwardSiLU),
    ],
    "positions_independent": [Mistake("always True", "", _always_independent)],
    "layer_parameter_count": [Mistake("hard-coded to GPT-2 small", "", _count_gpt2_small)],
    "swiglu": [
        Mistake("a GELU gate (GEGLU)", "", _SwiGLUGelu),
        Mistake("gate added instead of multiplied", "", _SwiGLUSummed),
    ],
}
