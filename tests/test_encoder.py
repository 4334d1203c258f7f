"""The encoder matches torch's TransformerEncoder with copied weights, and sees both directions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.attention import padding_mask
from course_lib.encoder import (
    Encoder,
    EncoderClassifier,
    EncoderLayer,
    encoder_mask,
    load_encoder_layer_from_torch,
)

D_MODEL, N_HEADS, D_FF = 16, 4, 24


def _torch_layer(norm_first: bool, activation: str, seed: int = 0) -> nn.TransformerEncoderLayer:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        D_MODEL,
        N_HEADS,
        D_FF,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    )
    with torch.no_grad():  # norms that are not the identity, so that their roles matter
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
    return layer


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_layer_matches_torch_transformer_encoder_layer(norm_first, activation):
    theirs = _torch_layer(norm_first, activation)
    ours = EncoderLayer(D_MODEL, N_HEADS, D_FF, norm_first=norm_first, activation=activation)
    load_encoder_layer_from_torch(ours.double(), theirs)
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    mask = padding_mask(torch.tensor([7, 4, 1]), 7)  # (batch, 1, seq)
    real = mask[:, 0]
    expected = theirs.train()(x, src_key_padding_mask=~real)  # train mode: no fused fast path
    torch.testing.assert_close(ours(x, mask=mask)[real], expected[real])
    torch.testing.assert_close(ours(x), theirs(x))


def test_loading_refuses_a_layer_arranged_differently():
    with pytest.raises(ValueError, match="norm_first"):
        load_encoder_layer_from_torch(
            EncoderLayer(D_MODEL, N_HEADS, D_FF, norm_first=False), _torch_layer(True, "gelu")
        )
    with pytest.raises(ValueError, match="activation"):
        load_encoder_layer_from_torch(
            EncoderLayer(D_MODEL, N_HEADS, D_FF), _torch_layer(True, "relu")
        )


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_stack_matches_torch_transformer_encoder(norm_first):
    ours = Encoder(50, D_MODEL, N_HEADS, 2, D_FF, max_seq=20, norm_first=norm_first).double()
    theirs = nn.TransformerEncoder(
        _torch_layer(norm_first, "gelu"),
        num_layers=2,
        enable_nested_tensor=False,
        norm=nn.LayerNorm(D_MODEL, dtype=torch.float64) if norm_first else None,
    ).train()
    for layer, torch_layer in zip(ours.layers, theirs.layers, strict=True):
        load_encoder_layer_from_torch(layer, torch_layer)
    ids, lengths = torch.randint(0, 50, (2, 9)), torch.tensor([9, 5])
    x = ours.pos(ours.embed(ids))  # the stack's input: embeddings plus positions
    real = padding_mask(lengths, 9)[:, 0]
    expected = theirs(x, src_key_padding_mask=~real)
    torch.testing.assert_close(ours(ids, lengths)[real], expected[real])


def _encoder(seed=0, **kwargs):
    torch.manual_seed(seed)
    return Encoder(40, D_MODEL, N_HEADS, 2, D_FF, max_seq=32, padding_idx=0, **kwargs).eval()


def test_padding_does_not_change_the_real_positions():
    encoder = _encoder()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    short = encoder(ids)
    padded = encoder(torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0]]))
    torch.testing.assert_close(padded[:, :5], short)
    # The same through lengths, whatever the padding positions hold.
    noisy = torch.tensor([[5, 6, 7, 8, 9, 31, 2, 17]])
    torch.testing.assert_close(encoder(noisy, lengths=torch.tensor([5]))[:, :5], short)


def test_the_encoder_sees_the_whole_sequence_in_both_directions():
    encoder = _encoder()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed_last, changed_first = ids.clone(), ids.clone()
    changed_last[0, -1], changed_first[0, 0] = 20, 20
    out = encoder(ids)
    assert not torch.allclose(encoder(changed_last)[0, 0], out[0, 0])  # first sees the last
    assert not torch.allclose(encoder(changed_first)[0, -1], out[0, -1])  # last sees the first


def test_encoder_returns_one_attention_map_per_layer_with_zero_weight_on_padding():
    encoder = _encoder()
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5]])
    out, weights = encoder(ids, need_weights=True)
    assert out.shape == (2, 5, D_MODEL) and len(weights) == 2
    assert weights[0].shape == (2, N_HEADS, 5, 5)
    assert (weights[1][0, :, :, 3:] == 0).all()
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, N_HEADS, 5))


def test_encoder_mask_sources_and_errors():
    ids = torch.tensor([[3, 4, 0]])
    assert encoder_mask(ids).__class__ is type(None)
    assert encoder_mask(ids, padding_idx=0).tolist() == [[[True, True, False]]]
    assert encoder_mask(ids, lengths=torch.tensor([1])).tolist() == [[[True, False, False]]]
    with pytest.raises(ValueError, match="not both"):
        encoder_mask(ids, torch.tensor([1]), torch.ones(1, 1, 3, dtype=torch.bool))


def test_classifier_pools_only_real_positions_and_learns_a_simple_rule():
    torch.manual_seed(0)
    model = EncoderClassifier(12, 2, d_model=16, n_heads=2, n_layers=1, max_seq=8, padding_idx=0)
    ids = torch.randint(1, 12, (64, 8))
    lengths = torch.randint(3, 9, (64,))
    ids[torch.arange(8) >= lengths.unsqueeze(1)] = 0
    labels = (ids == 7).any(dim=1).long()  # does the sequence contain token 7?
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = nn.functional.cross_entropy(model(ids), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits, weights = model(ids, return_weights=True)
    assert (logits.argmax(-1) == labels).float().mean() > 0.95
    assert (weights[ids == 0] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(64))
