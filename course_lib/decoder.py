"""The transformer decoder, in its two shapes: with cross-attention, and decoder-only (GPT).

A decoder position may look only at itself and the positions before it (a **causal** mask),
because at generation time the later tokens do not exist yet. Two kinds of decoder follow:

* :class:`DecoderLayer`, the decoder of the original encoder-decoder Transformer: causal
  self-attention, then **cross-attention** whose queries come from the decoder and whose keys
  and values come from the encoder's output (the *memory*), then a feed-forward network;
* :class:`DecoderBlock`, the block of GPT-style models: pre-norm causal self-attention and a
  feed-forward network, nothing else. It can read and extend a key-value cache
  (``course_lib.sampling.KVCache``), so that generation processes each position once.

:class:`EncoderDecoder` joins an encoder and a stack of decoder layers for
sequence-to-sequence tasks, trained with **teacher forcing** (the decoder reads the true
target shifted right by one and predicts every next token at once) and run with
:func:`greedy_decode`. :class:`DecoderOnlyLM` stacks decoder blocks into a small language
model that follows the generation protocol of ``course_lib.sampling``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import causal_mask
from course_lib.embedding import Embedding
from course_lib.encoder import Encoder, encoder_mask
from course_lib.feedforward import FeedForward
from course_lib.head import LMHead
from course_lib.multihead import MultiHeadAttention, merge_heads, split_heads
from course_lib.norm import LayerNorm
from course_lib.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = ["DecoderBlock", "DecoderLayer", "DecoderOnlyLM", "EncoderDecoder", "greedy_decode"]


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the memory, and a feed-forward network.

    Each sub-layer has its residual connection and LayerNorm, arranged as in
    :class:`course_lib.encoder.EncoderLayer` (``norm1`` self-attention, ``norm2``
    cross-attention, ``norm3`` feed-forward). The causal mask is always applied; ``self_mask``
    can hide more (it is combined with ``&``).

    Args:
        d_model, n_heads, d_ff, dropout, norm_first, activation: as ``EncoderLayer``.

    Shape:
        x (batch, seq_tgt, d_model), memory (batch, seq_src, d_model) -> (batch, seq_tgt,
        d_model); with ``need_weights`` also the cross-attention weights
        (batch, n_heads, seq_tgt, seq_src).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1, self.norm2, self.norm3 = (LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the three sub-layers.

        Args:
            x: the decoder's states (batch, seq_tgt, d_model).
            memory: the encoder's output (batch, seq_src, d_model).
            self_mask: extra mask for self-attention, combined with the causal mask.
            memory_mask: which source positions may be looked at, e.g. (batch, 1, seq_src).
            need_weights: also return the cross-attention weights.
        """
        # 1. Causal self-attention over the decoder's own states.
        h = self.norm1(x) if self.norm_first else x
        x = x + self.dropout(self.self_attn(h, mask=self_mask, is_causal=True))
        x = x if self.norm_first else self.norm1(x)

        # 2. Cross-attention: queries from the decoder, keys and values from the memory.
        h = self.norm2(x) if self.norm_first else x
        crossed = self.cross_attn(h, memory, memory, mask=memory_mask, need_weights=need_weights)
        crossed, weights = crossed if need_weights else (crossed, None)
        x = x + self.dropout(crossed)
        x = x if self.norm_first else self.norm2(x)

        # 3. Feed-forward network at every position.
        x = x + self.ff(self.norm3(x)) if self.norm_first else self.norm3(x + self.ff(x))
        return (x, weights) if need_weights else x


class DecoderBlock(nn.Module):
    """The GPT block: pre-norm causal self-attention and a feed-forward network.

    ``x = x + attn(norm1(x))`` with a causal mask, then ``x = x + ff(norm2(x))``.

    Args:
        d_model: width of the residual stream.
        n_heads: attention heads; must divide ``d_model``.
        d_ff: hidden width of the feed-forward network (default ``4 * d_model``).
        dropout: dropout on the attention weights and the sub-layers' outputs.
        activation: the feed-forward non-linearity.

    Shape:
        x (batch, seq, d_model) -> (batch, seq, d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.norm2 = LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        """Run the block.

        Args:
            x: (batch, seq, d_model); with a cache, only the new positions.
            mask: extra bool mask (such as padding), combined with the causal mask.
            cache: a ``course_lib.sampling.KVCache`` (anything with ``update(layer, k, v)``)
                holding the keys and values of the earlier positions; this block appends its
                new ones. ``mask`` must be ``None`` then.
            layer: this block's index in the cache.
        """
        h = self.norm1(x)
        if cache is None:
            attended = self.self_attn(h, mask=mask, is_causal=True)
        else:
            if mask is not None:
                raise ValueError("a mask cannot be combined with a cache in this block")
            attended = self._attend_with_cache(h, cache, layer)
        x = x + self.dropout(attended)
        return x + self.ff(self.norm2(x))

    def _attend_with_cache(self, h: torch.Tensor, cache, layer: int) -> torch.Tensor:
        """Causal self-attention of the new positions over the cached ones and themselves."""
        attn = self.self_attn
        q = split_heads(attn.q_proj(h), attn.n_heads)  # (batch, n_heads, seq_new, d_head)
        k = split_heads(attn.k_proj(h), attn.n_heads)  # (batch, n_heads, seq_new, d_head)
        v = split_heads(attn.v_proj(h), attn.n_heads)  # (batch, n_heads, seq_new, d_head)
        k, v = cache.update(layer, k, v)  # (batch, n_heads, seq_all, d_head) each

        # The new positions are the last ones: each sees everything up to itself.
        seq_new, seq_all = q.shape[2], k.shape[2]
        mask = None if seq_new == 1 else causal_mask(seq_new, seq_all, device=h.device)
        dropout_p = attn.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return attn.out_proj(merge_heads(out))  # (batch, seq_new, d_model)


class EncoderDecoder(nn.Module):
    """An encoder and a decoder joined by cross-attention, with an output head.

    Args:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size (default: ``src_vocab``).
        d_model, n_heads, d_ff, dropout, norm_first: as the layers.
        n_layers: layers in the encoder and in the decoder.
        max_seq: longest source or target sequence.
        pad_id: the padding id of the source (its embedding stays zero and it is hidden from
            attention).

    Shape:
        src (batch, seq_src), tgt_in (batch, seq_tgt) -> logits (batch, seq_tgt, tgt_vocab).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int | None = None,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int | None = None,
        max_seq: int = 128,
        dropout: float = 0.0,
        norm_first: bool = True,
        pad_id: int | None = None,
    ) -> None:
        super().__init__()
        tgt_vocab = src_vocab if tgt_vocab is None else tgt_vocab
        self.encoder = Encoder(
            src_vocab, d_model, n_heads, n_layers, d_ff, max_seq, dropout, norm_first, pad_id
        )
        self.tgt_embed = Embedding(tgt_vocab, d_model)
        self.tgt_pos = SinusoidalPositionalEncoding(max_seq, d_model)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = LMHead(d_model, tgt_vocab)

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the memory (batch, seq_src, d_model) and its mask (batch, 1, seq_src) or None."""
        mask = encoder_mask(src, src_lengths, None, self.encoder.padding_idx)
        return self.encoder(src, mask=mask), mask

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the logits of every target position, and each layer's cross-attention weights
        (batch, n_heads, seq_tgt, seq_src) when ``need_weights``."""
        x = self.tgt_pos(self.tgt_embed(tgt_in))  # (batch, seq_tgt, d_model)
        weights = []
        for layer in self.layers:
            if need_weights:
                x, w = layer(x, memory, memory_mask=memory_mask, need_weights=True)
                weights.append(w)
            else:
                x = layer(x, memory, memory_mask=memory_mask)
        logits = self.head(self.norm(x))  # (batch, seq_tgt, tgt_vocab)
        return (logits, weights) if need_weights else logits

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, src_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher forcing: logits for every position of ``tgt_in`` at once."""
        memory, memory_mask = self.encode(src, src_lengths)
        return self.decode(tgt_in, memory, memory_mask)


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder,
    src: torch.Tensor,
    max_len: int,
    bos_id: int,
    eos_id: int,
    src_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate target sequences one token at a time, always taking the most likely token.

    The source is encoded once. Every sequence starts with ``bos_id``; at each step the
    decoder reads everything generated so far and the argmax of the last position's logits is
    appended. A sequence that has produced ``eos_id`` only gets ``eos_id`` afterwards, and
    decoding stops when every sequence has produced it or after ``max_len`` new tokens.

    Args:
        model: has ``encode(src, src_lengths) -> (memory, memory_mask)`` and
            ``decode(tgt_in, memory, memory_mask) -> logits`` like :class:`EncoderDecoder`.
        src: LongTensor (batch, seq_src).
        max_len: the most tokens to generate after ``bos_id``.
        bos_id, eos_id: the start and end tokens.
        src_lengths: real tokens per source row, when the batch is padded.

    Returns:
        LongTensor (batch, 1 + n) starting with ``bos_id``, ``n <= max_len``.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0:
        raise ValueError(f"max_len must be a non-negative int, got {max_len!r}")
    was_training = model.training
    model.eval()
    memory, memory_mask = model.encode(src, src_lengths)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        if done.all():
            break
        logits = model.decode(out, memory, memory_mask)  # (batch, seq, tgt_vocab)
        token = logits[:, -1].argmax(dim=-1)  # (batch,)
        token = torch.where(done, torch.full_like(token, eos_id), token)
        out = torch.cat([out, token.unsqueeze(1)], dim=1)  # (batch, seq + 1)
        done = done | (token == eos_id)
    model.train(was_training)
    return out


class DecoderOnlyLM(nn.Module):
    """A small decoder-only language model: embeddings, decoder blocks, a norm and a head.

    Token embeddings start as N(0, 0.02^2) (the GPT-2 scale; the course's ``Embedding``
    starts at N(0, 1)) because with ``tie_weights`` the same matrix also scores the output,
    and N(0, 1) rows would give logits far too large at the start.

    It follows the generation protocol of ``course_lib.sampling``: ``model(ids, cache=None)``
    returns logits (batch, seq, vocab), and with a cache ``ids`` holds only the new tokens,
    placed after the ``cache.seq_len`` positions already stored.

    Args:
        vocab: vocabulary size.
        d_model, n_heads, d_ff, dropout: as :class:`DecoderBlock`.
        n_layers: number of blocks.
        max_seq: longest context (learned positions).
        tie_weights: share the token embedding with the output head.
    """

    def __init__(
        self,
        vocab: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int | None = None,
        max_seq: int = 128,
        dropout: float = 0.0,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.max_seq = max_seq
        self.embed = Embedding(vocab, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = LearnedPositionalEmbedding(max_seq, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model)
        self.head = LMHead(d_model, vocab, tie_to=self.embed if tie_weights else None)

    def forward(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        """Return the logits (batch, seq, vocab) of every position of ``ids``."""
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, seq), got {tuple(ids.shape)}")
        start = 0 if cache is None else cache.seq_len
        end = start + ids.shape[1]
        if end > self.max_seq:
            raise ValueError(f"positions up to {end} do not fit in max_seq={self.max_seq}")

        # Token embeddings plus the positions start .. end - 1.
        x = self.embed(ids) + self.pos.weight[start:end]  # (batch, seq, d_model)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache, layer=i)
        return self.head(self.norm(x))  # (batch, seq, vocab)
