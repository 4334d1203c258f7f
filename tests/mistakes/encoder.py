"""Wrong answers to notebook 08 that the checks cannot name but must fail."""

from __future__ import annotations

import math

import torch

from course_lib.attention import padding_mask
from course_lib.checks import Mistake
from course_lib.encoder import Encoder, EncoderLayer
from course_lib.exercises.encoder import reference_loader


class _LayerAlwaysGelu(EncoderLayer):
    # The activation argument is accepted and then forgotten.
    def __init__(
        self, d_model, n_heads, d_ff=None, dropout=0.0, norm_first=True, activation="gelu"
    ):
        super().__init__(d_model, n_heads, d_ff, dropout, norm_first, "gelu")


def _load_weights_without_biases(layer, torch_layer):
    reference_loader(layer, torch_layer)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("bias") and "norm" not in name:
                parameter.zero_()


class _EncoderScaledEmbeddings(Encoder):
    # The original paper's sqrt(d_model) scaling, which this specification does not ask for.
    def forward(self, ids, lengths=None):
        mask = None if lengths is None else padding_mask(lengths, ids.shape[1])
        x = self.pos(self.embed(ids) * math.sqrt(self.embed.d_model))
        for layer in self.layers:
            x = layer(x, mask=mask)
        return self.norm(x)


class _EncoderPositionsTwice(Encoder):
    def forward(self, ids, lengths=None):
        mask = None if lengths is None else padding_mask(lengths, ids.shape[1])
        x = self.pos(self.pos(self.embed(ids)))
        for layer in self.layers:
            x = layer(x, mask=mask)
        return self.norm(x)


EXTRA_MISTAKES = {
    "encoder_layer": [Mistake("the activation argument is ignored", "", _LayerAlwaysGelu)],
    "load_encoder_layer": [Mistake("no bias copied at all", "", _load_weights_without_biases)],
    "encoder": [
        Mistake("embeddings scaled by sqrt(d_model)", "", _EncoderScaledEmbeddings),
        Mistake("positions added twice", "", _EncoderPositionsTwice),
    ],
}
