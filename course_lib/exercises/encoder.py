"""Checks for notebook 08, the encoder.

The references are ``course_lib.encoder`` and, for loading weights, PyTorch's own
``torch.nn.TransformerEncoderLayer``. A learner's module is checked by building it, loading a
seeded set of weights into it (so parameter names must follow the specification) and comparing
its output with the reference module holding the same weights. The known mistakes are modules
or functions of the same shape, so they go through exactly the same path.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.attention import padding_mask
from course_lib.checks import Case, CheckFailure, Mistake, check_function
from course_lib.encoder import Encoder, EncoderLayer, load_encoder_layer_from_torch
from course_lib.exercises import Exercise

# ----------------------------------------------------------------------------------------------
# Building a learner's module with known weights
# ----------------------------------------------------------------------------------------------


def seeded_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Return a state dict for ``module`` with seeded random values.

    Norm weights are drawn around one and every bias around zero, so that each parameter,
    norms included, changes the output: a layer that mixes up two norms cannot pass.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in sorted(module.state_dict().items()):
        noise = torch.randn(value.shape, generator=g, dtype=torch.float64)
        if "norm" in name and name.endswith("weight"):
            state[name] = 1.0 + 0.3 * noise
        elif name.endswith("bias"):
            state[name] = 0.1 * noise
        else:
            fan_in = value.shape[-1] if value.dim() > 1 else 1
            scale = 1.0 if name.startswith("embed") else fan_in**-0.5
            state[name] = scale * noise
    return state


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into the learner's ``module``, explaining any mismatch of names."""
    if not isinstance(module, nn.Module):
        raise CheckFailure(f"{what} should build an nn.Module, got {type(module).__name__}")
    ours = set(module.state_dict())
    expected = set(state)
    if ours != expected:
        missing, extra = sorted(expected - ours), sorted(ours - expected)
        raise CheckFailure(
            f"{what} does not have the parameters the specification names.\n"
            f"  missing: {missing[:6]}{' ...' if len(missing) > 6 else ''}\n"
            f"  unexpected: {extra[:6]}{' ...' if len(extra) > 6 else ''}\n"
            "Use the attribute names of the specification (and the course's modules)."
        )
    module.double()
    module.load_state_dict(state)
    module.eval()


def run_layer(layer_class, d_model, n_heads, d_ff, norm_first, activation, x, lengths, seed=0):
    """Build ``layer_class``, give it seeded weights, and return its output at real positions."""
    reference = EncoderLayer(d_model, n_heads, d_ff, norm_first=norm_first, activation=activation)
    layer = layer_class(d_model, n_heads, d_ff, norm_first=norm_first, activation=activation)
    load_state(layer, seeded_state(reference, seed), "EncoderLayer")
    mask = None if lengths is None else padding_mask(lengths, x.shape[1])  # (batch, 1, seq)
    with torch.no_grad():
        out = layer(x.double(), mask=mask)
    return _real_positions(out, lengths)


def run_encoder(
    encoder_class, vocab, d_model, n_heads, n_layers, norm_first, ids, lengths, seed=0
):
    """Build ``encoder_class``, give it seeded weights, return its output at real positions."""
    kwargs = {"d_ff": 2 * d_model, "max_seq": 32, "norm_first": norm_first}
    reference = Encoder(vocab, d_model, n_heads, n_layers, **kwargs)
    encoder = encoder_class(vocab, d_model, n_heads, n_layers, **kwargs)
    load_state(encoder, seeded_state(reference, seed), "Encoder")
    with torch.no_grad():
        out = encoder(ids, lengths) if lengths is not None else encoder(ids)
    return _real_positions(out, lengths)


def _real_positions(out: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions, whose values mean nothing."""
    if not isinstance(out, torch.Tensor) or lengths is None or out.dim() != 3:
        return out
    real = padding_mask(lengths, out.shape[1])[:, 0].unsqueeze(-1)  # (batch, seq, 1)
    return out * real


def torch_layer(d_model, n_heads, d_ff, norm_first, activation, seed=0):
    """A seeded ``torch.nn.TransformerEncoderLayer`` in float64, with norms that matter."""
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(
        d_model,
        n_heads,
        d_ff,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    )
    with torch.no_grad():
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.2)
    return layer.train()  # dropout is 0; training mode keeps torch off its fused fast path


def run_loader(load_fn, d_model, n_heads, d_ff, norm_first, activation, x, lengths, seed=0):
    """Load a torch layer's weights with ``load_fn``; return the output at real positions."""
    theirs = torch_layer(d_model, n_heads, d_ff, norm_first, activation, seed)
    ours = EncoderLayer(d_model, n_heads, d_ff, norm_first=norm_first, activation=activation)
    ours.double().eval()
    load_fn(ours, theirs)
    mask = padding_mask(lengths, x.shape[1])
    with torch.no_grad():
        return _real_positions(ours(x.double(), mask=mask), lengths)


def torch_output(d_model, n_heads, d_ff, norm_first, activation, x, lengths, seed=0):
    """What ``torch.nn.TransformerEncoderLayer`` computes, at the real positions."""
    theirs = torch_layer(d_model, n_heads, d_ff, norm_first, activation, seed)
    real = padding_mask(lengths, x.shape[1])[:, 0]  # (batch, seq)
    with torch.no_grad():
        return _real_positions(theirs(x.double(), src_key_padding_mask=~real), lengths)


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


class _LayerNoResidual(EncoderLayer):
    def forward(self, x, mask=None):
        if self.norm_first:
            x = self.self_attn(self.norm1(x), mask=mask)
            return x + self.ff(self.norm2(x))
        x = self.norm1(self.self_attn(x, mask=mask))
        return self.norm2(x + self.ff(x))


class _LayerAlwaysPreNorm(EncoderLayer):
    def forward(self, x, mask=None):
        x = x + self.self_attn(self.norm1(x), mask=mask)
        return x + self.ff(self.norm2(x))


class _LayerSwappedNorms(EncoderLayer):
    def forward(self, x, mask=None):
        self.norm1, self.norm2 = self.norm2, self.norm1
        try:
            return super().forward(x, mask)
        finally:
            self.norm1, self.norm2 = self.norm2, self.norm1


class _LayerIgnoresMask(EncoderLayer):
    def forward(self, x, mask=None):
        return super().forward(x, None)


class _LayerMaskReversed(EncoderLayer):
    def forward(self, x, mask=None):
        return super().forward(x, None if mask is None else ~mask)


class _LayerFeedForwardOnInput(EncoderLayer):
    def forward(self, x, mask=None):
        if self.norm_first:
            return x + self.self_attn(self.norm1(x), mask=mask) + self.ff(self.norm2(x))
        attended = self.norm1(x + self.self_attn(x, mask=mask))
        return self.norm2(attended + self.ff(x))


class _EncoderNoPositions(Encoder):
    def forward(self, ids, lengths=None):
        mask = None if lengths is None else padding_mask(lengths, ids.shape[1])
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, mask=mask)
        return self.norm(x)


class _EncoderIgnoresLengths(Encoder):
    def forward(self, ids, lengths=None):
        return super().forward(ids)


class _EncoderNoFinalNorm(Encoder):
    def forward(self, ids, lengths=None):
        mask = None if lengths is None else padding_mask(lengths, ids.shape[1])
        x = self.pos(self.embed(ids))
        for layer in self.layers:
            x = layer(x, mask=mask)
        return x


class _EncoderMaskReversed(Encoder):
    def forward(self, ids, lengths=None):
        mask = None if lengths is None else ~padding_mask(lengths, ids.shape[1])
        return super().forward(ids, mask=mask)


class _EncoderOneSharedLayer(Encoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layers = nn.ModuleList([self.layers[0]] * len(self.layers))

    def forward(self, ids, lengths=None):
        return super().forward(ids, lengths)


@torch.no_grad()
def _copy_attention(ours, theirs, order=(0, 1, 2), out_proj=True):
    weights = theirs.in_proj_weight.chunk(3)
    biases = theirs.in_proj_bias.chunk(3)
    for proj, i in zip((ours.q_proj, ours.k_proj, ours.v_proj), order, strict=True):
        proj.weight.copy_(weights[i])
        proj.bias.copy_(biases[i])
    if out_proj:
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


@torch.no_grad()
def _copy_rest(layer, torch_layer, swap_norms=False, swap_linears=False, biases=True):
    ups = (
        (torch_layer.linear2, torch_layer.linear1)
        if swap_linears
        else (torch_layer.linear1, torch_layer.linear2)
    )
    for ours, theirs in zip((layer.ff.up, layer.ff.down), ups, strict=True):
        ours.weight.copy_(theirs.weight)
        if biases:
            ours.bias.copy_(theirs.bias)
    norms = (
        (torch_layer.norm2, torch_layer.norm1)
        if swap_norms
        else (torch_layer.norm1, torch_layer.norm2)
    )
    for ours, theirs in zip((layer.norm1, layer.norm2), norms, strict=True):
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)


def _load_kqv_order(layer, torch_layer):
    _copy_attention(layer.self_attn, torch_layer.self_attn, order=(1, 0, 2))
    _copy_rest(layer, torch_layer)


def _load_norms_swapped(layer, torch_layer):
    _copy_attention(layer.self_attn, torch_layer.self_attn)
    _copy_rest(layer, torch_layer, swap_norms=True)


def _load_linears_swapped(layer, torch_layer):
    _copy_attention(layer.self_attn, torch_layer.self_attn)
    _copy_rest(layer, torch_layer, swap_linears=True)


def _load_without_out_proj(layer, torch_layer):
    _copy_attention(layer.self_attn, torch_layer.self_attn, out_proj=False)
    _copy_rest(layer, torch_layer)


def _load_without_ff_biases(layer, torch_layer):
    _copy_attention(layer.self_attn, torch_layer.self_attn)
    _copy_rest(layer, torch_layer, biases=False)


EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


LAYER_MISTAKES = _register(
    "encoder_layer",
    "EncoderLayer",
    [
        Mistake(
            "no residual connection",
            "each sub-layer adds its output to its input: x = x + attn(...), then "
            "x = x + ff(...) (inside the norm for post-norm)",
            _LayerNoResidual,
        ),
        Mistake(
            "norm_first=False still normalises first",
            "post-norm applies the norm after the sum: x = norm1(x + attn(x))",
            _LayerAlwaysPreNorm,
        ),
        Mistake(
            "norm1 and norm2 swapped",
            "norm1 belongs to the attention sub-layer, norm2 to the feed-forward sub-layer",
            _LayerSwappedNorms,
        ),
        Mistake(
            "the padding mask is not passed to attention",
            "give mask to self_attn(..., mask=mask) so no query looks at padding",
            _LayerIgnoresMask,
        ),
        Mistake(
            "the mask is inverted",
            "in this course True means 'may attend': pass the mask as it is",
            _LayerMaskReversed,
        ),
        Mistake(
            "the feed-forward reads the layer's input",
            "the feed-forward sub-layer works on the output of the attention sub-layer",
            _LayerFeedForwardOnInput,
        ),
    ],
)

ENCODER_MISTAKES = _register(
    "encoder",
    "Encoder",
    [
        Mistake(
            "positions not added",
            "attention ignores order: add the positional encoding, self.pos(self.embed(ids))",
            _EncoderNoPositions,
        ),
        Mistake(
            "lengths ignored: padding is attended to",
            "build padding_mask(lengths, seq) and pass it to every layer",
            _EncoderIgnoresLengths,
        ),
        Mistake(
            "no final LayerNorm",
            "a pre-norm stack never normalises its residual stream: end with self.norm(x)",
            _EncoderNoFinalNorm,
        ),
        Mistake(
            "the padding mask is inverted",
            "padding_mask is True for the real tokens, which is what attention needs",
            _EncoderMaskReversed,
        ),
        Mistake(
            "one layer reused n_layers times",
            "build a new EncoderLayer for each position of the stack (a generator or a list "
            "comprehension), not [layer] * n_layers",
            _EncoderOneSharedLayer,
        ),
    ],
)

LOAD_MISTAKES = _register(
    "load_encoder_layer",
    "load_encoder_layer",
    [
        Mistake(
            "q, k and v blocks taken in the wrong order",
            "in_proj_weight stacks the query rows first, then keys, then values",
            _load_kqv_order,
        ),
        Mistake(
            "norm1 and norm2 swapped",
            "torch's norm1 goes with attention, norm2 with the feed-forward, as in your layer",
            _load_norms_swapped,
        ),
        Mistake(
            "linear1 and linear2 swapped",
            "linear1 goes up to d_ff (your ff.up), linear2 comes back down (ff.down)",
            _load_linears_swapped,
        ),
        Mistake(
            "the output projection was not copied",
            "copy self_attn.out_proj's weight and bias too",
            _load_without_out_proj,
        ),
        Mistake(
            "the feed-forward biases were not copied",
            "linear1 and linear2 have biases: copy them into ff.up.bias and ff.down.bias",
            _load_without_ff_biases,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _as_run(run, impl):
    """A mistake in the form ``check_function`` calls: ``run`` with the wrong implementation."""
    return lambda *args: run(impl, *args)


def check_encoder_layer(layer_class, cases=None) -> None:
    """Check ``EncoderLayer(d_model, n_heads, d_ff, norm_first=..., activation=...)``."""
    lengths = torch.tensor([6, 3])
    default = [
        Case((16, 4, 32, True, "gelu", _randn(2, 6, 16), None), label="pre-norm"),
        Case((16, 4, 32, False, "gelu", _randn(2, 6, 16, seed=1), None), label="post-norm"),
        Case(
            (16, 4, 32, True, "gelu", _randn(2, 6, 16, seed=2), lengths),
            label="pre-norm with padding",
        ),
        Case(
            (16, 2, 24, False, "relu", _randn(2, 6, 16, seed=3), lengths),
            label="post-norm, relu, padding",
        ),
    ]
    mistakes = [Mistake(m.name, m.hint, _as_run(run_layer, m.impl)) for m in LAYER_MISTAKES]
    check_function(
        _as_run(run_layer, layer_class),
        _as_run(run_layer, EncoderLayer),
        _cases(cases, default),
        name="EncoderLayer",
        mistakes=mistakes,
    )


def check_load_encoder_layer(load_fn, cases=None) -> None:
    """Check ``load_encoder_layer(layer, torch_layer)`` against PyTorch's own output."""
    lengths = torch.tensor([5, 2, 4])
    default = [
        Case((16, 4, 32, True, "gelu", _randn(3, 5, 16), lengths), label="pre-norm, gelu"),
        Case(
            (16, 4, 32, False, "gelu", _randn(3, 5, 16, seed=1), lengths), label="post-norm, gelu"
        ),
        Case((8, 2, 20, False, "relu", _randn(3, 5, 8, seed=2), lengths), label="post-norm, relu"),
    ]
    mistakes = [Mistake(m.name, m.hint, _as_run(run_loader, m.impl)) for m in LOAD_MISTAKES]
    check_function(
        _as_run(run_loader, load_fn),
        torch_output,
        _cases(cases, default),
        name="load_encoder_layer",
        mistakes=mistakes,
        verified="the output of torch.nn.TransformerEncoderLayer at every real "
        "position (pre-norm and post-norm, gelu and relu)",
    )


def check_encoder(encoder_class, cases=None) -> None:
    """Check ``Encoder(vocab, d_model, n_heads, n_layers, d_ff, max_seq, norm_first)``."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (3, 7), generator=g)
    lengths = torch.tensor([7, 4, 1])
    default = [
        Case((30, 16, 4, 2, True, ids, None), label="pre-norm, no padding"),
        Case((30, 16, 4, 2, True, ids, lengths), label="pre-norm, padded"),
        Case((30, 16, 2, 3, False, ids, lengths), label="post-norm, 3 layers, padded"),
    ]
    mistakes = [Mistake(m.name, m.hint, _as_run(run_encoder, m.impl)) for m in ENCODER_MISTAKES]
    check_function(
        _as_run(run_encoder, encoder_class),
        _as_run(run_encoder, Encoder),
        _cases(cases, default),
        name="Encoder",
        mistakes=mistakes,
    )


def reference_loader(layer, torch_layer) -> None:
    """The course's loader, in the exercise's signature."""
    load_encoder_layer_from_torch(layer, torch_layer)
