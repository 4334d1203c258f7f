"""Tests of the GPT assembled from the course's components."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import causal_mask
from course_lib.decoder import DecoderBlock
from course_lib.gpt import GPT, GPTConfig, GPTParts, count_parameters

CONFIG = GPTConfig(vocab=23, max_seq=12, d_model=24, n_heads=3, n_layers=2)


def make(config: GPTConfig = CONFIG, seed: int = 0, **kwargs) -> GPT:
    torch.manual_seed(seed)
    return GPT(config, **kwargs)


def torch_reference(model: GPT) -> nn.Module:
    """The same network written with torch.nn modules, holding copies of ``model``'s weights.

    A pre-norm ``nn.TransformerEncoderLayer`` with GELU and a causal mask is exactly a GPT
    block.
    """
    config = model.config

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(config.vocab, config.d_model)
            self.pos = nn.Parameter(torch.zeros(config.max_seq, config.d_model))
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    config.d_model,
                    config.n_heads,
                    4 * config.d_model,
                    dropout=0.0,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(config.n_layers)
            )
            self.norm = nn.LayerNorm(config.d_model)

        def forward(self, ids):
            x = self.embed(ids) + self.pos[: ids.shape[1]]
            hidden = ~causal_mask(ids.shape[1])  # torch's convention: True = hidden
            for layer in self.layers:
                x = layer(x, src_mask=hidden)
            return F.linear(self.norm(x), self.embed.weight)

    reference = Reference().double()
    with torch.no_grad():
        reference.embed.weight.copy_(model.embed.weight)
        reference.pos.copy_(model.pos.weight)
        for layer, block in zip(reference.layers, model.blocks):
            attn = block.self_attn
            layer.self_attn.in_proj_weight.copy_(
                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            )
            layer.self_attn.in_proj_bias.copy_(
                torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            )
            layer.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
            layer.linear1.load_state_dict(block.ff.up.state_dict())
            layer.linear2.load_state_dict(block.ff.down.state_dict())
            layer.norm1.load_state_dict(block.norm1.state_dict())
            layer.norm2.load_state_dict(block.norm2.state_dict())
        reference.norm.load_state_dict(model.norm.state_dict())
    return reference.eval()


def test_logits_match_a_torch_nn_model_with_the_same_weights():
    model = make().double().eval()
    ids = torch.randint(
        CONFIG.vocab, (3, CONFIG.max_seq), generator=torch.Generator().manual_seed(1)
    )
    expected = torch_reference(model)(ids)
    got = model(ids)
    assert got.shape == (3, CONFIG.max_seq, CONFIG.vocab)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


def test_a_position_never_sees_later_tokens():
    model = make().eval()
    ids = torch.randint(CONFIG.vocab, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % CONFIG.vocab
    torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])
    assert not torch.allclose(model(ids)[:, 6:], model(changed)[:, 6:])


def test_parameter_count_follows_the_formula_and_ties_the_head():
    model = make()
    d, v, L, s = CONFIG.d_model, CONFIG.vocab, CONFIG.n_layers, CONFIG.max_seq
    per_block = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d  # attention, ffn, two norms
    assert model.head.weight is model.embed.weight
    assert count_parameters(model) == v * d + s * d + L * per_block + 2 * d
    untied = make(GPTConfig(**{**CONFIG.__dict__, "tie_weights": False}))
    assert count_parameters(untied) == count_parameters(model) + v * d


def test_initialisation_is_gpt2_style_and_the_first_loss_is_a_uniform_guess():
    config = GPTConfig(vocab=65, max_seq=32, d_model=128, n_heads=4, n_layers=4)
    model = make(config)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].ff.up.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * config.n_layers)
    assert model.blocks[0].self_attn.out_proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert model.blocks[0].ff.down.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert torch.all(model.blocks[0].ff.up.bias == 0) and torch.all(model.norm.weight == 1)

    g = torch.Generator().manual_seed(0)
    ids, targets = torch.randint(65, (2, 8, 32), generator=g)
    loss = F.cross_entropy(model(ids).reshape(-1, 65), targets.reshape(-1))
    assert loss.item() == pytest.approx(math.log(65), abs=0.05)


def test_generation_with_and_without_the_cache_gives_the_same_tokens():
    model = make()
    prompt = torch.randint(CONFIG.vocab, (2, 3))
    with_cache = model.generate(prompt, 8, generator=torch.Generator().manual_seed(4))
    model._cache_ok = False
    without = model.generate(prompt, 8, generator=torch.Generator().manual_seed(4))
    assert with_cache.shape == (2, 11) and torch.equal(with_cache, without)
    assert torch.equal(with_cache[:, :3], prompt)
    assert model.training, "generate must restore training mode"


def test_generation_slides_the_context_past_max_seq():
    model = make()
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), 3 * CONFIG.max_seq, temperature=0)
    assert out.shape == (1, 1 + 3 * CONFIG.max_seq)


def test_too_long_input_is_a_clear_error():
    with pytest.raises(ValueError, match="max_seq"):
        make()(torch.zeros(1, CONFIG.max_seq + 1, dtype=torch.long))


class _PlainBlock(nn.Module):
    """A GPT block made of torch.nn parts, without a key-value cache."""

    def __init__(self, d_model, n_heads, d_ff, dropout):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            d_ff or 4 * d_model,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.layer(x, src_mask=mask, is_causal=True)


def test_parts_can_be_swapped_for_other_components():
    parts = GPTParts(block=_PlainBlock, norm=nn.LayerNorm)
    model = make(parts=parts)
    assert isinstance(model.norm, nn.LayerNorm) and isinstance(model.blocks[0], _PlainBlock)
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, CONFIG.vocab)
    # A block without a cache still generates, by recomputing the context.
    out = model.generate(torch.zeros(1, 2, dtype=torch.long), 4, temperature=0)
    assert out.shape == (1, 6)
    assert isinstance(make().blocks[0], DecoderBlock)


@pytest.mark.parametrize(
    "changes",
    [
        {"vocab": 0},
        {"d_model": 25},
        {"n_layers": 1.5},
        {"dropout": 1.0},
        {"d_ff": 0},
        {"tie_weights": 1},
    ],
    ids=[
        "vocab zero",
        "heads do not divide",
        "float layers",
        "dropout one",
        "d_ff zero",
        "tie not bool",
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises((ValueError, TypeError)):
        GPTConfig(**{**CONFIG.__dict__, **changes})


def test_config_round_trips_through_a_dict():
    from dataclasses import asdict

    assert GPTConfig.from_dict(asdict(CONFIG)) == CONFIG
    with pytest.raises(ValueError, match="unknown"):
        GPTConfig.from_dict({**asdict(CONFIG), "n_embd": 3})


# ----------------------------------------------------------------------------------------------
# Your GPT: components loaded from the notebooks
# ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _from_notebook(factory) -> bool:
    """Whether a part was defined in a notebook (not imported from course_lib)."""
    target = getattr(factory, "func", factory)
    return not getattr(target, "__module__", "course_lib").startswith("course_lib")


def test_your_gpt_uses_the_solved_components_of_the_earlier_notebooks(capsys):
    from course_lib.exercises.training import your_parts

    parts = your_parts(ROOT / "solutions")
    report = capsys.readouterr().out
    # The instructor notebooks hold working solutions: every component found must be used.
    assert "reference (yours" not in report, report
    assert report.count("yours, from") >= 1, report
    if "Embedding                    yours" in report:
        assert _from_notebook(parts.embedding)
    if "TiedHead                     yours" in report:
        assert parts.head is not GPTParts().head

    # The assembled model runs, learns, and generates.
    model = make(parts=parts)
    ids = torch.randint(CONFIG.vocab, (2, CONFIG.max_seq))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.cross_entropy(
            model(ids[:, :-1]).reshape(-1, CONFIG.vocab), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.generate(ids[:, :2], 3, temperature=0).shape == (2, 5)


def test_your_gpt_falls_back_to_the_reference_for_unsolved_components(tmp_path, capsys):
    from course_lib.exercises.training import your_parts

    # The student notebooks as released: every exercise still raises NotImplementedError.
    parts = your_parts(ROOT / "notebooks")
    report = capsys.readouterr().out
    assert "yours, from" not in report and "is not written yet" in report
    assert parts == GPTParts()
    assert your_parts(tmp_path) == GPTParts()
    assert "no notebook with it" in capsys.readouterr().out
