"""Wrong answers to notebook 03 that the checks cannot name but must fail."""

from __future__ import annotations

from course_lib.checks import Mistake
from course_lib.positional import LearnedPositionalEmbedding, apply_rotary, sinusoidal_encoding


def _sinusoidal_accepts_odd(seq, d_model, base=10000.0):
    # An odd width is rounded up and cut back instead of raising.
    return sinusoidal_encoding(seq, d_model + d_model % 2, base)[:, :d_model]


def _sinusoidal_float64(seq, d_model, base=10000.0):
    return sinusoidal_encoding(seq, d_model, base).double()


class _LearnedWithoutLengthCheck(LearnedPositionalEmbedding):
    def forward(self, x):
        return x + self.weight[: x.shape[-2]]


def _rotary_ignores_positions(x, positions=None, base=10000.0):
    return apply_rotary(x, None, base)


def _rotary_accepts_odd(x, positions=None, base=10000.0):
    if x.shape[-1] % 2:
        return x.clone()
    return apply_rotary(x, positions, base)


EXTRA_MISTAKES = {
    "sinusoidal_encoding": [
        Mistake("an odd d_model is accepted", "", _sinusoidal_accepts_odd),
        Mistake("float64 instead of float32", "", _sinusoidal_float64),
    ],
    "learned_positions": [
        Mistake(
            "no ValueError for a sequence longer than max_seq", "", _LearnedWithoutLengthCheck
        ),
    ],
    "apply_rotary": [
        Mistake("the positions argument is ignored", "", _rotary_ignores_positions),
        Mistake("an odd d_head is accepted", "", _rotary_accepts_odd),
    ],
}
