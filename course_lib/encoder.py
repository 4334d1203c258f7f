"""The transformer encoder: layers of bidirectional self-attention and feed-forward networks.

An encoder layer has two sub-layers, each wrapped in a residual connection and a layer
normalization, in one of two arrangements:

* pre-norm (``norm_first=True``): ``x = x + attn(norm1(x)); x = x + ff(norm2(x))``;
* post-norm (``norm_first=False``, the original Transformer): ``x = norm1(x + attn(x));
  x = norm2(x + ff(x))``.

There is no causal mask: every position may look at every other real position, before and
after it. The only mask hides padding, the filler that makes short sequences as long as the
longest of their batch. The :class:`Encoder` stacks layers on top of token embeddings and
sinusoidal positions, and :class:`EncoderClassifier` pools its output into one vector per
sequence to classify it.

The parameter names follow ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``norm1``,
``norm2``), so :func:`load_encoder_layer_from_torch` can copy that module's weights.

>>> layer = EncoderLayer(d_model=8, n_heads=2)
>>> layer(torch.randn(3, 5, 8)).shape
torch.Size([3, 5, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import padding_mask, softmax
from course_lib.embedding import Embedding
from course_lib.feedforward import FeedForward
from course_lib.multihead import MultiHeadAttention, load_from_torch
from course_lib.norm import LayerNorm
from course_lib.positional import SinusoidalPositionalEncoding

__all__ = [
    "Encoder",
    "EncoderClassifier",
    "EncoderLayer",
    "encoder_mask",
    "load_encoder_layer_from_torch",
]

# torch.nn.TransformerEncoderLayer records its activation as 1 (relu) or 2 (gelu).
_TORCH_ACTIVATIONS = {1: "relu", 2: "gelu"}


class EncoderLayer(nn.Module):
    """Self-attention and a feed-forward network, each with a residual and a LayerNorm.

    Args:
        d_model: width of the residual stream.
        n_heads: attention heads; must divide ``d_model``.
        d_ff: hidden width of the feed-forward network (default ``4 * d_model``).
        dropout: dropout on the attention weights and on each sub-layer's output.
        norm_first: pre-norm (True) or post-norm (False); see the module docstring.
        activation: the feed-forward non-linearity, ``"gelu"`` or ``"relu"`` (any name of
            ``course_lib.feedforward.ACTIVATIONS``).

    Shape:
        x (batch, seq, d_model) -> (batch, seq, d_model); with ``need_weights`` also the
        attention weights (batch, n_heads, seq, seq).
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
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run both sub-layers.

        Args:
            x: (batch, seq, d_model).
            mask: bool, True where a query may look: (batch, 1, seq) for padding, or any
                shape ``MultiHeadAttention`` accepts.
            need_weights: also return the attention weights.
        """
        # Self-attention sub-layer: normalise before (pre-norm) or after the sum (post-norm).
        h = self.norm1(x) if self.norm_first else x
        attended = self.self_attn(h, mask=mask, need_weights=need_weights)
        attended, weights = attended if need_weights else (attended, None)
        x = x + self.dropout(attended)
        if not self.norm_first:
            x = self.norm1(x)

        # Feed-forward sub-layer, arranged the same way (FeedForward applies its own dropout).
        if self.norm_first:
            x = x + self.ff(self.norm2(x))
        else:
            x = self.norm2(x + self.ff(x))
        return (x, weights) if need_weights else x


@torch.no_grad()
def load_encoder_layer_from_torch(layer: EncoderLayer, torch_layer: nn.TransformerEncoderLayer):
    """Copy the weights of a ``torch.nn.TransformerEncoderLayer`` into ``layer`` in place.

    The torch layer must be ``batch_first`` and arranged like ``layer`` (same ``norm_first``,
    same activation). Afterwards ``layer(x, mask)`` equals
    ``torch_layer(x, src_key_padding_mask=~mask)`` at every real position.

    Raises:
        ValueError: when the sizes, the arrangement or the activation differ.
    """
    if not isinstance(torch_layer, nn.TransformerEncoderLayer):
        raise TypeError(
            f"torch_layer must be a torch.nn.TransformerEncoderLayer, got {type(torch_layer)}"
        )
    if torch_layer.norm_first != layer.norm_first:
        raise ValueError(
            f"norm_first differs: torch layer {torch_layer.norm_first}, this layer "
            f"{layer.norm_first}"
        )
    torch_activation = _TORCH_ACTIVATIONS.get(getattr(torch_layer, "activation_relu_or_gelu", 0))
    if torch_activation != layer.ff.activation:
        raise ValueError(
            f"activation differs: torch layer {torch_activation or torch_layer.activation!r}, "
            f"this layer {layer.ff.activation!r}"
        )
    if torch_layer.linear1.out_features != layer.ff.d_ff:
        raise ValueError(
            f"d_ff differs: torch layer {torch_layer.linear1.out_features}, this layer "
            f"{layer.ff.d_ff}"
        )

    # Attention (the stacked q, k, v projection is unpacked by load_from_torch).
    load_from_torch(layer.self_attn, torch_layer.self_attn)

    # Feed-forward: linear1 goes up to d_ff, linear2 comes back down.
    for ours, theirs in ((layer.ff.up, torch_layer.linear1), (layer.ff.down, torch_layer.linear2)):
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)

    # The two norms keep their roles: norm1 around attention, norm2 around the feed-forward.
    for ours, theirs in ((layer.norm1, torch_layer.norm1), (layer.norm2, torch_layer.norm2)):
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)
        ours.eps = theirs.eps


def encoder_mask(
    ids: torch.Tensor,
    lengths: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    padding_idx: int | None = None,
) -> torch.Tensor | None:
    """Return the attention mask of an encoder's input, True for keys a query may look at.

    Exactly one source is used, in this order: an explicit ``mask`` as given; ``lengths``
    (batch,), the number of real tokens at the start of each row; or, when the encoder has a
    ``padding_idx``, the positions whose id is not ``padding_idx``. Without any, ``None``
    (every position visible).

    Returns:
        A bool mask of shape (batch, 1, seq) built from lengths or padding, or ``mask``.
    """
    if mask is not None and lengths is not None:
        raise ValueError("give either lengths or mask, not both")
    if mask is not None:
        return mask
    if lengths is not None:
        return padding_mask(lengths.to(ids.device), ids.shape[1])  # (batch, 1, seq)
    if padding_idx is not None:
        return (ids != padding_idx).unsqueeze(1)  # (batch, 1, seq)
    return None


class Encoder(nn.Module):
    """Token embeddings, sinusoidal positions, a stack of encoder layers and a final norm.

    The embedding rows start as N(0, 1), on the same scale as the rows of the sinusoidal table,
    so the two are simply added. With pre-norm layers the stack ends with a LayerNorm (the
    residual stream is never normalised inside the layers); post-norm layers already end with
    one, so ``norm`` is then the identity.

    Args:
        vocab: number of token ids.
        d_model, n_heads, d_ff, dropout, norm_first: as :class:`EncoderLayer`.
        n_layers: number of layers.
        max_seq: longest sequence the positional table covers.
        padding_idx: the id of the padding token (its embedding stays zero).
        activation: the feed-forward non-linearity.

    Shape:
        ids (batch, seq) -> (batch, seq, d_model).
    """

    def __init__(
        self,
        vocab: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int | None = None,
        max_seq: int = 512,
        dropout: float = 0.0,
        norm_first: bool = True,
        padding_idx: int | None = None,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.padding_idx, self.max_seq = padding_idx, max_seq
        self.embed = Embedding(vocab, d_model, padding_idx=padding_idx)
        self.pos = SinusoidalPositionalEncoding(max_seq, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, norm_first, activation)
            for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode a batch of token ids.

        Args:
            ids: LongTensor (batch, seq).
            lengths: LongTensor (batch,), real tokens per row; the rest is padding.
            mask: instead of ``lengths``, an attention mask (see :func:`encoder_mask`).
            need_weights: also return each layer's attention weights.

        Returns:
            (batch, seq, d_model), or ``(output, [weights of each layer])`` with weights
            (batch, n_heads, seq, seq). Padded positions hold finite values that mean nothing.
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, seq), got {tuple(ids.shape)}")
        mask = encoder_mask(ids, lengths, mask, self.padding_idx)

        # Embed, add positions, then run the layers with the padding hidden.
        x = self.dropout(self.pos(self.embed(ids)))  # (batch, seq, d_model)
        weights = []
        for layer in self.layers:
            if need_weights:
                x, w = layer(x, mask=mask, need_weights=True)
                weights.append(w)
            else:
                x = layer(x, mask=mask)
        x = self.norm(x)
        return (x, weights) if need_weights else x


class EncoderClassifier(nn.Module):
    """An encoder followed by attention pooling and a linear layer: one label per sequence.

    Attention pooling scores every position against one learned query vector, turns the
    scores of the real positions into weights with a softmax, and sums the encoder's outputs
    with those weights. The weights say which tokens the classifier looked at.

    Args:
        vocab, d_model, n_heads, n_layers, d_ff, max_seq, dropout, norm_first, padding_idx:
            as :class:`Encoder`.
        n_classes: number of labels.

    Shape:
        ids (batch, seq) -> logits (batch, n_classes); pooling weights (batch, seq).
    """

    def __init__(
        self,
        vocab: int,
        n_classes: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int | None = None,
        max_seq: int = 512,
        dropout: float = 0.0,
        norm_first: bool = True,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(
            vocab, d_model, n_heads, n_layers, d_ff, max_seq, dropout, norm_first, padding_idx
        )
        self.pool_query = nn.Parameter(torch.randn(d_model) / math.sqrt(d_model))
        self.classify = nn.Linear(d_model, n_classes)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor | None = None, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return the class logits, and the pooling weights when ``return_weights``."""
        mask = encoder_mask(ids, lengths, None, self.encoder.padding_idx)
        h = self.encoder(ids, mask=mask)  # (batch, seq, d_model)

        # One score per position; padding gets -inf, hence zero weight.
        scores = h @ self.pool_query  # (batch, seq)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, 0], float("-inf"))
        weights = softmax(scores, dim=-1)  # (batch, seq)
        pooled = (weights.unsqueeze(-1) * h).sum(dim=1)  # (batch, d_model)
        logits = self.classify(F.dropout(pooled, self.encoder.dropout.p, self.training))
        return (logits, weights) if return_weights else logits
