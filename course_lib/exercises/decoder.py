"""Checks for notebook 09, the decoder and the encoder-decoder transformer.

The references are ``course_lib.decoder`` (``DecoderLayer``, ``DecoderBlock``,
``EncoderDecoder``, ``greedy_decode``). Modules are checked as in notebook 08: the learner's
module is built, gets seeded weights under the names of the specification, and its outputs
are compared with the reference holding the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.attention import causal_mask, padding_mask
from course_lib.checks import Case, Mistake, check_function
from course_lib.decoder import DecoderBlock, DecoderLayer, EncoderDecoder, greedy_decode
from course_lib.exercises import Exercise
from course_lib.exercises.encoder import load_state, seeded_state

# ----------------------------------------------------------------------------------------------
# Building a learner's module with known weights, and running it
# ----------------------------------------------------------------------------------------------


def run_decoder_layer(
    layer_class, d_model, n_heads, norm_first, x, memory, src_lengths, self_mask=None, seed=0
):
    """Build ``layer_class`` with seeded weights; return its output.

    ``src_lengths`` gives the memory's padding; ``self_mask`` (batch, 1, seq_tgt), when given,
    hides more target positions from self-attention.
    """
    kwargs = {"d_ff": 2 * d_model, "norm_first": norm_first}
    layer = layer_class(d_model, n_heads, **kwargs)
    load_state(layer, seeded_state(DecoderLayer(d_model, n_heads, **kwargs), seed), "DecoderLayer")
    memory_mask = None if src_lengths is None else padding_mask(src_lengths, memory.shape[1])
    with torch.no_grad():
        return layer(x.double(), memory.double(), self_mask=self_mask, memory_mask=memory_mask)


def run_decoder_block(block_class, d_model, n_heads, x, mask=None, seed=0):
    """Build ``block_class`` with seeded weights; return its output.

    ``mask`` (batch, 1, seq), when given, hides keys on top of the causal mask. (Padding at the
    end would not test it: a causal decoder's real positions never see the padding after them.)
    """
    block = block_class(d_model, n_heads, d_ff=2 * d_model)
    load_state(
        block, seeded_state(DecoderBlock(d_model, n_heads, d_ff=2 * d_model), seed), "DecoderBlock"
    )
    with torch.no_grad():
        return block(x.double()) if mask is None else block(x.double(), mask=mask)


def _model_kwargs(d_model, n_heads, n_layers):
    return {
        "d_model": d_model,
        "n_heads": n_heads,
        "n_layers": n_layers,
        "d_ff": 2 * d_model,
        "max_seq": 24,
    }


def run_encoder_decoder(
    model_class, src_vocab, tgt_vocab, d_model, n_heads, n_layers, src, tgt_in, src_lengths, seed=0
):
    """Build ``model_class`` with seeded weights; return its teacher-forced logits, and the
    logits of ``decode`` on the output of ``encode``."""
    kwargs = _model_kwargs(d_model, n_heads, n_layers)
    model = model_class(src_vocab, tgt_vocab, **kwargs)
    load_state(
        model, seeded_state(EncoderDecoder(src_vocab, tgt_vocab, **kwargs), seed), "EncoderDecoder"
    )
    with torch.no_grad():
        forward = model(src, tgt_in, src_lengths)
        memory, memory_mask = model.encode(src, src_lengths)
        decoded = model.decode(tgt_in, memory, memory_mask)
    return {
        "forward(src, tgt_in, src_lengths)": forward,
        "decode(tgt_in, *encode(src, src_lengths))": decoded,
    }


def decoding_model(seed=0, vocab=12, eos_id=2, eos_bias=0.0):
    """A seeded ``EncoderDecoder`` whose head favours ``eos_id`` by ``eos_bias``."""
    torch.manual_seed(seed)
    model = EncoderDecoder(vocab, vocab, d_model=16, n_heads=2, n_layers=2, max_seq=32, pad_id=0)
    model.head.bias = nn.Parameter(torch.zeros(vocab))
    with torch.no_grad():
        model.head.bias[eos_id] = eos_bias
    return model.eval()


def run_greedy(decode_fn, seed, src, max_len, eos_bias, src_lengths=None):
    """Greedy-decode ``src`` with a seeded model (BOS 1, EOS 2)."""
    model = decoding_model(seed, eos_bias=eos_bias)
    with torch.no_grad():
        if src_lengths is None:
            return decode_fn(model, src, max_len, 1, 2)
        return decode_fn(model, src, max_len, 1, 2, src_lengths)


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


def _causal(seq, device, extra=None):
    mask = causal_mask(seq, device=device)
    return mask if extra is None else extra & mask


class _LayerCrossAttendsToItself(DecoderLayer):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        h = self.norm1(x)
        x = x + self.self_attn(h, mask=_causal(x.shape[1], x.device, self_mask))
        h = self.norm2(x)
        x = x + self.cross_attn(h, h, h)  # keys and values from the decoder, not the memory
        return x + self.ff(self.norm3(x))


def _layer_without_causal(layer, x, memory, self_mask, memory_mask):
    """A decoder layer whose self-attention uses ``self_mask`` alone, with no causal mask."""
    h = layer.norm1(x) if layer.norm_first else x
    x = x + layer.self_attn(h, mask=self_mask)
    x = x if layer.norm_first else layer.norm1(x)
    h = layer.norm2(x) if layer.norm_first else x
    x = x + layer.cross_attn(h, memory, memory, mask=memory_mask)
    x = x if layer.norm_first else layer.norm2(x)
    return x + layer.ff(layer.norm3(x)) if layer.norm_first else layer.norm3(x + layer.ff(x))


class _LayerNotCausal(DecoderLayer):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return _layer_without_causal(self, x, memory, self_mask, memory_mask)


class _LayerIgnoresMemoryMask(DecoderLayer):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        return super().forward(x, memory, self_mask, None)


class _LayerQueriesFromMemory(DecoderLayer):
    def forward(self, x, memory, self_mask=None, memory_mask=None):
        h = self.norm1(x)
        x = x + self.self_attn(h, mask=_causal(x.shape[1], x.device, self_mask))
        x = x + self.cross_attn(memory, self.norm2(x), self.norm2(x))
        return x + self.ff(self.norm3(x))


class _BlockNotCausal(DecoderBlock):
    def forward(self, x, mask=None):
        x = x + self.self_attn(self.norm1(x), mask=mask)
        return x + self.ff(self.norm2(x))


class _BlockPostNorm(DecoderBlock):
    def forward(self, x, mask=None):
        x = self.norm1(x + self.self_attn(x, mask=_causal(x.shape[1], x.device, mask)))
        return self.norm2(x + self.ff(x))


class _BlockMaskInverted(DecoderBlock):
    def forward(self, x, mask=None):
        inverted = ~_causal(x.shape[1], x.device, mask)
        x = x + self.self_attn(self.norm1(x), mask=inverted)
        return x + self.ff(self.norm2(x))


class _BlockNoAttentionResidual(DecoderBlock):
    def forward(self, x, mask=None):
        x = self.self_attn(self.norm1(x), mask=_causal(x.shape[1], x.device, mask))
        return x + self.ff(self.norm2(x))


class _ModelNoMemoryMask(EncoderDecoder):
    def decode(self, tgt_in, memory, memory_mask=None, need_weights=False):
        return super().decode(tgt_in, memory, None)


class _ModelNoTargetPositions(EncoderDecoder):
    def decode(self, tgt_in, memory, memory_mask=None, need_weights=False):
        x = self.tgt_embed(tgt_in)
        for layer in self.layers:
            x = layer(x, memory, memory_mask=memory_mask)
        return self.head(self.norm(x))


class _ModelNoFinalNorm(EncoderDecoder):
    def decode(self, tgt_in, memory, memory_mask=None, need_weights=False):
        x = self.tgt_pos(self.tgt_embed(tgt_in))
        for layer in self.layers:
            x = layer(x, memory, memory_mask=memory_mask)
        return self.head(x)


class _ModelMemoryIsSourceEmbedding(EncoderDecoder):
    def encode(self, src, src_lengths=None):
        _, mask = super().encode(src, src_lengths)
        return self.encoder.pos(self.encoder.embed(src)), mask


def _greedy_no_early_stop(model, src, max_len, bos_id, eos_id, src_lengths=None):
    memory, memory_mask = model.encode(src, src_lengths)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        token = model.decode(out, memory, memory_mask)[:, -1].argmax(-1)
        token = torch.where(done, torch.full_like(token, eos_id), token)
        out = torch.cat([out, token.unsqueeze(1)], dim=1)
        done |= token == eos_id
    return out


def _greedy_keeps_going_after_eos(model, src, max_len, bos_id, eos_id, src_lengths=None):
    memory, memory_mask = model.encode(src, src_lengths)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        if done.all():
            break
        token = model.decode(out, memory, memory_mask)[:, -1].argmax(-1)
        out = torch.cat([out, token.unsqueeze(1)], dim=1)
        done |= token == eos_id
    return out


def _greedy_first_position(model, src, max_len, bos_id, eos_id, src_lengths=None):
    memory, memory_mask = model.encode(src, src_lengths)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        if done.all():
            break
        token = model.decode(out, memory, memory_mask)[:, 0].argmax(-1)
        token = torch.where(done, torch.full_like(token, eos_id), token)
        out = torch.cat([out, token.unsqueeze(1)], dim=1)
        done |= token == eos_id
    return out


def _greedy_without_bos(model, src, max_len, bos_id, eos_id, src_lengths=None):
    return greedy_decode(model, src, max_len, bos_id, eos_id, src_lengths)[:, 1:]


EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


LAYER_MISTAKES = _register(
    "decoder_layer",
    "DecoderLayer",
    [
        Mistake(
            "cross-attention fed the decoder's own states as keys and values",
            "cross-attention takes its queries from the decoder and its keys and values from "
            "the memory: cross_attn(h, memory, memory, mask=memory_mask)",
            _LayerCrossAttendsToItself,
        ),
        Mistake(
            "the causal mask is left out of self-attention",
            "a decoder position may not look ahead: combine causal_mask(seq) with self_mask",
            _LayerNotCausal,
        ),
        Mistake(
            "the memory mask is not passed to cross-attention",
            "padding in the source must stay hidden: cross_attn(..., mask=memory_mask)",
            _LayerIgnoresMemoryMask,
        ),
        Mistake(
            "cross-attention queries taken from the memory",
            "the queries come from the decoder (one output per target position); the memory "
            "gives keys and values",
            _LayerQueriesFromMemory,
        ),
    ],
)

BLOCK_MISTAKES = _register(
    "decoder_block",
    "DecoderBlock",
    [
        Mistake(
            "the causal mask is left out",
            "self-attention in a decoder is causal: pass causal_mask(seq) (combined with mask)",
            _BlockNotCausal,
        ),
        Mistake(
            "post-norm instead of pre-norm",
            "the GPT block normalises the input of each sub-layer: x + attn(norm1(x))",
            _BlockPostNorm,
        ),
        Mistake(
            "the causal mask is inverted",
            "True means 'may attend': keep the lower triangle (causal_mask), do not negate it",
            _BlockMaskInverted,
        ),
        Mistake(
            "no residual connection around attention",
            "add the attention output to its input: x = x + attn(norm1(x))",
            _BlockNoAttentionResidual,
        ),
    ],
)

MODEL_MISTAKES = _register(
    "encoder_decoder",
    "EncoderDecoder",
    [
        Mistake(
            "the memory mask is not passed to the decoder layers",
            "give memory_mask to every layer, so cross-attention skips the source padding",
            _ModelNoMemoryMask,
        ),
        Mistake(
            "no positions added to the target",
            "the decoder needs positions too: self.tgt_pos(self.tgt_embed(tgt_in))",
            _ModelNoTargetPositions,
        ),
        Mistake(
            "no final LayerNorm before the head",
            "the pre-norm decoder stack ends with self.norm(x) before self.head",
            _ModelNoFinalNorm,
        ),
        Mistake(
            "the memory is the source embedding, not the encoder's output",
            "encode runs the whole encoder: memory = self.encoder(src, src_lengths)",
            _ModelMemoryIsSourceEmbedding,
        ),
    ],
)

GREEDY_MISTAKES = _register(
    "greedy_decode",
    "greedy_decode",
    [
        Mistake(
            "decoding does not stop when every sequence has ended",
            "stop as soon as every sequence has produced eos_id (or after max_len tokens)",
            _greedy_no_early_stop,
        ),
        Mistake(
            "finished sequences keep generating",
            "after a sequence's eos_id, append eos_id to it instead of new tokens",
            _greedy_keeps_going_after_eos,
        ),
        Mistake(
            "the next token is read from the first position's logits",
            "the prediction for the next token is at the last position: logits[:, -1]",
            _greedy_first_position,
        ),
        Mistake(
            "the output does not start with bos_id",
            "return the whole sequence, starting with the bos_id column",
            _greedy_without_bos,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


# An extra mask for 2 sequences of 5 positions: a few keys hidden from every query.
_HIDDEN_KEYS = torch.tensor([[[1, 0, 1, 1, 0]], [[1, 1, 0, 1, 1]]], dtype=torch.bool)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _as_run(run, impl):
    """A mistake in the form ``check_function`` calls: ``run`` with the wrong implementation."""
    return lambda *args: run(impl, *args)


def _named(run, mistakes):
    return [Mistake(m.name, m.hint, _as_run(run, m.impl)) for m in mistakes]


def check_decoder_layer(layer_class, cases=None) -> None:
    """Check ``DecoderLayer(d_model, n_heads, d_ff, norm_first)`` with seeded weights."""
    default = [
        Case((16, 4, True, _randn(2, 5, 16), _randn(2, 7, 16, seed=1), None), label="pre-norm"),
        Case(
            (
                16,
                4,
                True,
                _randn(2, 5, 16, seed=2),
                _randn(2, 7, 16, seed=3),
                torch.tensor([7, 3]),
            ),
            label="padded source",
        ),
        Case(
            (
                16,
                2,
                False,
                _randn(2, 6, 16, seed=4),
                _randn(2, 4, 16, seed=5),
                torch.tensor([2, 4]),
            ),
            label="post-norm, padded source",
        ),
        Case(
            (16, 4, True, _randn(2, 5, 16, seed=6), _randn(2, 7, 16, seed=7), None, _HIDDEN_KEYS),
            label="some target positions hidden",
        ),
    ]
    check_function(
        _as_run(run_decoder_layer, layer_class),
        _as_run(run_decoder_layer, DecoderLayer),
        _cases(cases, default),
        name="DecoderLayer",
        mistakes=_named(run_decoder_layer, LAYER_MISTAKES),
    )


def check_decoder_block(block_class, cases=None) -> None:
    """Check ``DecoderBlock(d_model, n_heads, d_ff)`` with seeded weights."""
    default = [
        Case((16, 4, _randn(2, 6, 16)), label="causal self-attention"),
        Case((8, 2, _randn(3, 4, 8, seed=1)), label="two heads"),
        Case((16, 4, _randn(2, 5, 16, seed=2), _HIDDEN_KEYS), label="an extra mask"),
    ]
    check_function(
        _as_run(run_decoder_block, block_class),
        _as_run(run_decoder_block, DecoderBlock),
        _cases(cases, default),
        name="DecoderBlock",
        mistakes=_named(run_decoder_block, BLOCK_MISTAKES),
    )


def check_encoder_decoder(model_class, cases=None) -> None:
    """Check ``EncoderDecoder``'s ``forward``, ``encode`` and ``decode`` with seeded weights."""
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(1, 15, (3, 7), generator=g), torch.randint(1, 11, (3, 5), generator=g)
    default = [
        Case((15, 11, 16, 4, 2, src, tgt, None), label="no padding"),
        Case((15, 11, 16, 4, 2, src, tgt, torch.tensor([7, 2, 5])), label="padded source"),
        Case(
            (9, 9, 8, 2, 1, src.clamp(max=8), tgt.clamp(max=8), torch.tensor([3, 7, 1])),
            label="one layer, shared vocabulary size",
        ),
    ]
    check_function(
        _as_run(run_encoder_decoder, model_class),
        _as_run(run_encoder_decoder, EncoderDecoder),
        _cases(cases, default),
        name="EncoderDecoder",
        mistakes=_named(run_encoder_decoder, MODEL_MISTAKES),
    )


def check_greedy_decode(decode_fn, cases=None) -> None:
    """Check ``greedy_decode(model, src, max_len, bos_id, eos_id, src_lengths=None)``."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, 12, (4, 6), generator=g)
    default = [
        Case((0, src, 6, 0.0), label="no sequence ends"),
        Case((0, src, 8, 0.3), label="sequences end at different steps"),
        Case((0, src, 8, 0.5), label="every sequence ends at the second token"),
        Case((2, src, 7, 0.3, torch.tensor([6, 3, 4, 1])), label="padded source"),
    ]
    check_function(
        _as_run(run_greedy, decode_fn),
        _as_run(run_greedy, greedy_decode),
        _cases(cases, default),
        name="greedy_decode",
        mistakes=_named(run_greedy, GREEDY_MISTAKES),
    )
