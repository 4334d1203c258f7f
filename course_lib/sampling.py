"""Choosing the next token, and generating text fast with a key-value cache.

A language model gives, for the last position, one logit per token of the vocabulary. Turning
those logits into a token is a choice with knobs:

- **temperature** divides the logits before the softmax: below 1 it sharpens the distribution,
  above 1 it flattens it, and 0 means "always take the most likely token" (greedy decoding,
  computed with ``argmax`` rather than a division by zero);
- **top-k** keeps only the ``k`` most likely tokens;
- **top-p** (nucleus sampling) keeps the smallest set of most likely tokens whose probability
  adds up to at least ``p``.

They are applied in that order, each renormalising what is left, and the token is then drawn
with ``torch.multinomial`` from a ``torch.Generator`` when one is given, so that a seeded
generator gives the same tokens on every run.

Generating ``n`` tokens one at a time recomputes every earlier position at every step unless
the model keeps the keys and values of the positions it has already seen. :class:`KVCache`
holds them, one pair per layer, and :func:`generate` uses it. A model that works with
:func:`generate` follows one protocol::

    logits = model(ids, cache=None)       # ids (batch, seq) -> logits (batch, seq, vocab)

With a cache, ``ids`` holds only the *new* tokens; the model places them at positions
``cache.seq_len, cache.seq_len + 1, ...`` and each layer ``i`` appends its new keys and values
with ``cache.update(i, k, v)``, which returns the keys and values of all positions so far.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = [
    "KVCache",
    "filter_top_k",
    "filter_top_p",
    "generate",
    "next_token_probs",
    "sample_next",
]

logger = logging.getLogger(__name__)


def _check_knobs(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a clear error for a temperature, top-k or top-p that makes no sense."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Return ``logits`` with every entry below the ``k``-th largest of its row set to ``-inf``.

    Entries equal to the ``k``-th largest are all kept, so ties at the cut-off never make the
    result depend on the order of the vocabulary. A ``k`` larger than the vocabulary keeps all.
    """
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Return ``logits`` keeping the smallest set of most likely tokens of probability >= ``p``.

    The tokens are sorted from most to least likely; a token is kept when the probability of
    the tokens *before* it is still below ``p``. So the token that crosses ``p`` is kept, the
    most likely token is always kept, and everything after the crossing is set to ``-inf``.
    """
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (..., vocab)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # (..., vocab)
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Return the distribution the next token is drawn from.

    Args:
        logits: scores of the last position, shape (batch, vocab) (or (vocab,)).
        temperature: divides the logits; 0 gives all the probability to the argmax (the
            first one on a tie), with no division.
        top_k: keep only the ``top_k`` most likely tokens (after the temperature).
        top_p: keep the smallest set of most likely tokens whose probability reaches
            ``top_p`` (after temperature and top-k, renormalised).

    Returns:
        Probabilities of the shape of ``logits``, each row summing to one.
    """
    _check_knobs(temperature, top_k, top_p)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__}")

    # Temperature zero: a one-hot distribution on the most likely token.
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)  # (..., 1)
        return torch.zeros_like(logits).scatter(-1, best, 1.0)

    # Temperature, then the two cut-offs, each on what the previous step left.
    scaled = logits / temperature
    if top_k is not None:
        scaled = filter_top_k(scaled, top_k)
    if top_p is not None:
        scaled = filter_top_p(scaled, top_p)
    return torch.softmax(scaled, dim=-1)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw the next token of every sequence of a batch.

    Args:
        logits: scores of the last position, shape (batch, vocab).
        temperature, top_k, top_p: see :func:`next_token_probs`; temperature 0 is greedy and
            draws no random number.
        generator: the source of randomness; the same seeded generator gives the same tokens.

    Returns:
        LongTensor of shape (batch,).

    >>> sample_next(torch.tensor([[0.0, 3.0, 1.0]]), temperature=0).tolist()
    [1]
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, vocab), got {tuple(logits.shape)}")
    if temperature == 0:
        _check_knobs(temperature, top_k, top_p)
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (batch,)


class KVCache:
    """The keys and values of the positions a model has already processed, one pair per layer.

    Each layer calls :meth:`update` with the keys and values of its new positions, of shape
    (batch, n_heads, seq_new, d_head), and gets back those of every position so far, to attend
    over. Layers are numbered from 0 and fill in order on the first call.

    >>> cache = KVCache()
    >>> k, v = cache.update(0, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    >>> k, v = cache.update(0, torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    >>> tuple(k.shape), cache.seq_len
    ((1, 2, 4, 4), 4)
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        """The number of layers stored."""
        return len(self.keys)

    @property
    def seq_len(self) -> int:
        """How many positions are stored (those of layer 0; 0 when empty)."""
        return self.keys[0].shape[-2] if self.keys else 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new keys and values of ``layer``; return those of all its positions.

        Args:
            layer: the layer's index (0, 1, ...).
            k, v: shape (batch, n_heads, seq_new, d_head).

        Returns:
            ``(keys, values)``, each of shape (batch, n_heads, seq_so_far, d_head).
        """
        if k.shape != v.shape or k.dim() != 4:
            raise ValueError(
                "k and v must share the shape (batch, n_heads, seq_new, d_head), got "
                f"{tuple(k.shape)} and {tuple(v.shape)}"
            )
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        elif 0 <= layer < len(self.keys):
            # Along the positions: (batch, n_heads, seq_so_far, d_head).
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=-2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=-2)
        else:
            raise ValueError(f"layer {layer!r} is out of order: {len(self.keys)} layer(s) stored")
        return self.keys[layer], self.values[layer]


@torch.no_grad()
def generate(
    model: nn.Module,
    ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    cache_factory: type = KVCache,
) -> torch.Tensor:
    """Extend every sequence of ``ids`` by ``max_new_tokens`` tokens.

    Args:
        model: follows the protocol of this module: ``model(ids, cache=None)`` returns logits
            (batch, seq, vocab). A ``max_seq`` attribute, when present, bounds the context.
        ids: the prompts, LongTensor (batch, seq), at least one token each.
        max_new_tokens: how many tokens to add.
        temperature, top_k, top_p, generator: how each token is chosen (:func:`sample_next`).
        use_cache: keep the keys and values of earlier positions instead of recomputing them.
            Both ways give the same tokens; with the cache the whole sequence must fit in
            ``model.max_seq``.
        cache_factory: the class of the cache to use (any class with ``update`` and
            ``seq_len`` like :class:`KVCache`).

    Returns:
        LongTensor (batch, seq + max_new_tokens): the prompts followed by the new tokens.
    """
    if ids.dim() != 2 or ids.shape[1] < 1:
        raise ValueError(f"ids must have shape (batch, seq) with seq >= 1, got {tuple(ids.shape)}")
    n = max_new_tokens
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    max_seq = getattr(model, "max_seq", None)
    if use_cache and max_seq is not None and ids.shape[1] + max_new_tokens > max_seq:
        raise ValueError(
            f"with a cache the prompt ({ids.shape[1]}) plus {max_new_tokens} new tokens must fit "
            f"in max_seq={max_seq}; use use_cache=False to slide the context instead"
        )
    was_training = model.training
    model.eval()

    cache = cache_factory() if use_cache else None
    out, pending = ids, ids  # pending: the tokens the model has not read yet
    for _ in range(max_new_tokens):
        # With a cache the model reads only the new tokens; without, the whole (cropped) context.
        if cache is not None:
            logits = model(pending, cache=cache)
        else:
            context = out if max_seq is None else out[:, -max_seq:]
            logits = model(context)
        token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)  # (batch,)
        pending = token.unsqueeze(1)  # (batch, 1)
        out = torch.cat([out, pending], dim=1)  # (batch, seq + 1)

    model.train(was_training)
    return out
