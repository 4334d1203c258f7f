"""A GPT assembled from the course's components.

The model is the decoder-only transformer of GPT-2, at any size::

    ids (batch, seq)
      -> token embedding + learned positions, dropout        (batch, seq, d_model)
      -> n_layers x DecoderBlock (pre-norm causal attention, feed-forward)
      -> final LayerNorm -> LMHead (tied to the token embedding)  (batch, seq, vocab)

Every piece comes from an earlier notebook (``Embedding``, ``LearnedPositionalEmbedding``,
``DecoderBlock``, ``LayerNorm``, ``LMHead``), and :class:`GPTParts` says which class builds
each one, so the same model can be assembled from a learner's own components instead of the
reference ones.

>>> model = GPT(GPTConfig(vocab=10, max_seq=8, d_model=16, n_heads=2, n_layers=1))
>>> model(torch.zeros(3, 8, dtype=torch.long)).shape
torch.Size([3, 8, 10])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from course_lib.decoder import DecoderBlock
from course_lib.embedding import Embedding
from course_lib.feedforward import count_parameters
from course_lib.head import LMHead
from course_lib.norm import LayerNorm
from course_lib.positional import LearnedPositionalEmbedding
from course_lib.sampling import generate

__all__ = ["GPT", "GPTConfig", "GPTParts", "count_parameters"]

# The standard deviation of the initial weights (GPT-2's).
INIT_STD = 0.02


@dataclass(frozen=True)
class GPTConfig:
    """The size and shape of a GPT."""

    vocab: int = field(metadata={"help": "tokens in the vocabulary (set by the tokenizer)"})
    max_seq: int = field(default=64, metadata={"help": "longest context, in tokens"})
    d_model: int = field(default=128, metadata={"help": "width of the residual stream"})
    n_heads: int = field(default=4, metadata={"help": "attention heads per block"})
    n_layers: int = field(default=4, metadata={"help": "decoder blocks"})
    d_ff: int | None = field(
        default=None, metadata={"help": "hidden width of the feed-forward net (None: 4*d_model)"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout probability while training"})
    tie_weights: bool = field(
        default=True, metadata={"help": "share the token embedding with the output head"}
    )

    def __post_init__(self) -> None:
        for name in ("vocab", "max_seq", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.d_ff is not None and (
            isinstance(self.d_ff, bool) or not isinstance(self.d_ff, int) or self.d_ff < 1
        ):
            raise ValueError(f"GPTConfig.d_ff must be None or a positive int, got {self.d_ff!r}")
        if isinstance(self.dropout, bool) or not (
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.tie_weights, bool):
            raise TypeError(f"GPTConfig.tie_weights must be a bool, got {self.tie_weights!r}")

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """Rebuild a config saved with ``dataclasses.asdict``; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class GPTParts:
    """The classes (or any callables) that build each part of a :class:`GPT`.

    Each is called with the arguments shown and must return an ``nn.Module`` that follows the
    reference component's interface (see the course's ``INTERFACES``):

    - ``embedding(vocab, d_model)``: ids (batch, seq) -> (batch, seq, d_model), with a
      ``weight`` parameter (vocab, d_model) when the head is tied to it;
    - ``positional(max_seq, d_model)``: adds position information, (batch, seq, d_model) ->
      same shape;
    - ``block(d_model, n_heads, d_ff, dropout)``: a causal pre-norm decoder block,
      ``block(x)`` (batch, seq, d_model) -> same shape;
    - ``norm(d_model)``: the final normalisation;
    - ``head(d_model, vocab, tie_to=embedding_or_None)``: hidden states -> logits.
    """

    embedding: Callable[..., nn.Module] = Embedding
    positional: Callable[..., nn.Module] = LearnedPositionalEmbedding
    block: Callable[..., nn.Module] = DecoderBlock
    norm: Callable[..., nn.Module] = LayerNorm
    head: Callable[..., nn.Module] = LMHead


def _accepts_cache(block: nn.Module) -> bool:
    """Whether a block's forward takes ``cache`` and ``layer`` (see course_lib.sampling)."""
    parameters = inspect.signature(block.forward).parameters
    return "cache" in parameters and "layer" in parameters


class GPT(nn.Module):
    """A decoder-only transformer language model.

    Args:
        config: the sizes (see :class:`GPTConfig`).
        parts: the classes that build each part (the reference components by default).

    Weights start as in GPT-2: every matrix (embeddings included) N(0, 0.02^2), biases zero,
    normalisation gains one, and the matrices that write into the residual stream (the
    attention output projection ``out_proj`` and the feed-forward ``down`` layer) scaled down
    by ``sqrt(2 * n_layers)``, so that the stream's variance does not grow with depth.

    It follows the generation protocol of ``course_lib.sampling``: ``model(ids, cache=None)``
    returns logits, and with a ``KVCache`` ``ids`` holds only the new tokens.

    Shape:
        ids (batch, seq) with ``seq <= max_seq`` -> logits (batch, seq, vocab).
    """

    def __init__(self, config: GPTConfig, parts: GPTParts | None = None) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        parts = parts if parts is not None else GPTParts()
        self.config, self.max_seq = config, config.max_seq

        # Embeddings, blocks, final norm and head, each built by its part.
        self.embed = parts.embedding(config.vocab, config.d_model)
        self.pos = parts.positional(config.max_seq, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            parts.block(config.d_model, config.n_heads, config.d_ff, config.dropout)
            for _ in range(config.n_layers)
        )
        self.norm = parts.norm(config.d_model)
        self.head = parts.head(
            config.d_model, config.vocab, tie_to=self.embed if config.tie_weights else None
        )
        self._cache_ok = all(_accepts_cache(block) for block in self.blocks)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every parameter the GPT-2 way (see the class docstring)."""
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, param in self.named_parameters():
            if param.dim() >= 2:
                writes_residual = name.endswith(("out_proj.weight", "down.weight"))
                nn.init.normal_(param, std=residual_std if writes_residual else INIT_STD)
            elif name.endswith("bias"):
                nn.init.zeros_(param)

    def forward(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        """Return the next-token logits (batch, seq, vocab) of every position of ``ids``.

        Args:
            ids: LongTensor (batch, seq).
            cache: a ``course_lib.sampling.KVCache``; ``ids`` are then the new tokens, placed
                after the ``cache.seq_len`` positions the cache already holds.
        """
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"ids must be a LongTensor of shape (batch, seq), got {shape}")
        start = 0 if cache is None else cache.seq_len
        end = start + ids.shape[1]
        if end > self.max_seq:
            raise ValueError(f"positions up to {end} do not fit in max_seq={self.max_seq}")
        if cache is not None and not self._cache_ok:
            raise ValueError("these blocks take no key-value cache; generate without one")

        # Token embeddings plus positions start .. end - 1.
        x = self.embed(ids)  # (batch, seq, d_model)
        if start == 0:
            x = self.pos(x)
        else:
            # The positional part only adds; adding it to zeros reads positions 0 .. end - 1.
            zeros = x.new_zeros(1, end, x.shape[-1])  # (1, end, d_model)
            x = x + self.pos(zeros)[:, start:]
        x = self.dropout(x)

        # The blocks, then the final norm and the head.
        for i, block in enumerate(self.blocks):
            x = block(x) if cache is None else block(x, cache=cache, layer=i)
        return self.head(self.norm(x))  # (batch, seq, vocab)

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend every prompt of ``ids`` (batch, seq) by ``max_new_tokens`` sampled tokens.

        Uses a key-value cache while the whole sequence fits in ``max_seq``; a longer one
        slides the context window instead (keeping the last ``max_seq`` tokens). The same
        seeded ``generator`` gives the same text. See ``course_lib.sampling.sample_next`` for
        ``temperature`` (0 = greedy), ``top_k`` and ``top_p``.

        Returns:
            LongTensor (batch, seq + max_new_tokens).
        """
        fits = ids.shape[1] + max_new_tokens <= self.max_seq
        return generate(
            self,
            ids,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            generator,
            use_cache=fits and self._cache_ok,
        )
