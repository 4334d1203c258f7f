"""Wrong answers to notebook 09 that the checks cannot name but must fail."""

from __future__ import annotations

import math

import torch

from course_lib.attention import causal_mask
from course_lib.checks import Mistake
from course_lib.decoder import DecoderBlock, DecoderLayer, EncoderDecoder


class _LayerAlwaysPreNorm(DecoderLayer):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        mask = causal_mask(x.shape[1], device=x.device)
        mask = mask if self_mask is None else self_mask & mask
        x = x + self.self_attn(self.norm1(x), mask=mask)
        h = self.norm2(x)
        x = x + self.cross_attn(h, memory, memory, mask=memory_mask)
        return x + self.ff(self.norm3(x))


class _BlockDropsExtraMask(DecoderBlock):
    def forward(self, x, mask=None):
        return super().forward(x)


class _ModelScaledTargetEmbeddings(EncoderDecoder):
    def decode(self, tgt_in, memory, memory_mask=None, need_weights=False):
        x = self.tgt_pos(self.tgt_embed(tgt_in) * math.sqrt(self.tgt_embed.d_model))
        for layer in self.layers:
            x = layer(x, memory, memory_mask=memory_mask)
        return self.head(self.norm(x))


def _greedy_stops_at_first_eos(model, src, max_len, bos_id, eos_id, src_lengths=None):
    memory, memory_mask = model.encode(src, src_lengths)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    for _ in range(max_len):
        token = model.decode(out, memory, memory_mask)[:, -1].argmax(dim=-1)
        out = torch.cat([out, token.unsqueeze(1)], dim=1)
        if (token == eos_id).any():  # stops when the *first* sequence ends
            break
    return out


EXTRA_MISTAKES = {
    "decoder_layer": [Mistake("norm_first=False still normalises first", "", _LayerAlwaysPreNorm)],
    "decoder_block": [Mistake("the extra mask is dropped", "", _BlockDropsExtraMask)],
    "encoder_decoder": [
        Mistake("target embeddings scaled by sqrt(d_model)", "", _ModelScaledTargetEmbeddings)
    ],
    "greedy_decode": [
        Mistake("decoding stops when the first sequence ends", "", _greedy_stops_at_first_eos)
    ],
}
