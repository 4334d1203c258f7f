"""Tests of the training helpers: batches, the step, evaluation, schedule, checkpoints, loop."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.gpt import GPT, GPTConfig
from course_lib.training import (
    TrainConfig,
    TrainState,
    estimate_loss,
    fit,
    get_batch,
    load_checkpoint,
    lr_at,
    make_optimizer,
    save_checkpoint,
    train_step,
)

VOCAB = 13


def tiny_gpt(seed: int = 0, dropout: float = 0.0, max_seq: int = 8) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab=VOCAB, max_seq=max_seq, d_model=16, n_heads=2, n_layers=1, dropout=dropout)
    )


def stream(n: int = 500, seed: int = 0) -> torch.Tensor:
    """A token stream with structure to learn: mostly each token is the previous one plus 1."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.where(
        torch.rand(n, generator=g) < 0.9, 1, torch.randint(VOCAB, (n,), generator=g)
    )
    return steps.cumsum(0) % VOCAB


# ----------------------------------------------------------------------------------------------
# get_batch
# ----------------------------------------------------------------------------------------------


def test_batch_targets_are_the_inputs_shifted_by_one():
    data = torch.arange(100)
    x, y = get_batch(data, 6, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 10) and x.dtype == y.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    # Every row is a contiguous window of the stream.
    assert torch.equal(x - x[:, :1], torch.arange(10).expand(6, 10))


def test_batch_starts_come_from_one_randint_call():
    data = torch.arange(50) * 3
    x, _ = get_batch(data, 4, 7, torch.Generator().manual_seed(5))
    starts = torch.randint(50 - 7, (4,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(x[:, 0], data[starts])


def test_batch_can_reach_the_last_window():
    data = torch.arange(12)
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x, y = get_batch(data, 8, 10, g)
        seen.update(x[:, 0].tolist())
        assert y.max() <= 11
    assert seen == {0, 1}


def test_batch_shares_split_the_global_batch():
    data = torch.arange(1000)
    full, _ = get_batch(data, 8, 5, torch.Generator().manual_seed(3))
    parts = [
        get_batch(data, 8, 5, torch.Generator().manual_seed(3), rank=r, world_size=4)[0]
        for r in range(4)
    ]
    assert torch.equal(torch.cat(parts), full)


@pytest.mark.parametrize(
    ("data", "batch_size", "seq", "world_size"),
    [
        (torch.zeros(5, 5, dtype=torch.long), 2, 2, 1),
        (torch.zeros(10), 2, 2, 1),
        (torch.arange(10), 2, 10, 1),
        (torch.arange(10), 2, 0, 1),
        (torch.arange(10), 3, 2, 2),
    ],
    ids=["2-D data", "float data", "seq too long", "seq zero", "batch not divisible"],
)
def test_batch_rejects_bad_arguments(data, batch_size, seq, world_size):
    with pytest.raises(ValueError):
        get_batch(data, batch_size, seq, world_size=world_size)


# ----------------------------------------------------------------------------------------------
# train_step
# ----------------------------------------------------------------------------------------------


def test_train_step_learns_a_repeated_batch():
    model = tiny_gpt()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = get_batch(stream(), 4, 8, torch.Generator().manual_seed(0))
    losses = [train_step(model, optimizer, x, y).item() for _ in range(30)]
    assert losses[0] == pytest.approx(math.log(VOCAB), abs=0.15)
    assert losses[-1] < 0.5 * losses[0]


def test_train_step_is_one_plain_step_with_fresh_gradients():
    # Two steps with the library equal two hand-written steps (which clear the gradients).
    model, reference = tiny_gpt(), tiny_gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x, y = get_batch(stream(), 4, 8, g)
        loss = train_step(model, opt, x, y, max_norm=None)
        ref_opt.zero_grad()
        ref_loss = F.cross_entropy(reference(x).reshape(-1, VOCAB), y.reshape(-1))
        ref_loss.backward()
        ref_opt.step()
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
        assert not loss.requires_grad
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)


def test_train_step_clips_the_gradient_norm_before_stepping():
    model = tiny_gpt()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = get_batch(stream(), 4, 8, torch.Generator().manual_seed(0))
    train_step(model, optimizer, x, y, max_norm=0.01)
    # With SGD at lr 1 the update is minus the (clipped) gradient.
    update = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert update.norm().item() == pytest.approx(0.01, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# estimate_loss
# ----------------------------------------------------------------------------------------------


class _GradWatcher:
    """Records whether autograd was on during each forward pass of a model."""

    def __init__(self, model: nn.Module):
        self.grad_enabled: list[bool] = []
        model.register_forward_hook(lambda *_: self.grad_enabled.append(torch.is_grad_enabled()))


@pytest.mark.parametrize("start_in_train_mode", [True, False])
def test_estimate_loss_is_the_mean_over_batches_in_eval_mode(start_in_train_mode):
    model = tiny_gpt(dropout=0.3)
    model.train(start_in_train_mode)
    watcher = _GradWatcher(model)
    splits = {"train": stream(300, 1), "val": stream(200, 2)}
    got = estimate_loss(model, splits, 3, 4, 8, torch.Generator().manual_seed(9))

    # Recompute by hand: the same batches in the same order, dropout off.
    g = torch.Generator().manual_seed(9)
    model.eval()
    expected = {}
    with torch.no_grad():
        for name, data in splits.items():
            losses = []
            for _ in range(3):
                x, y = get_batch(data, 4, 8, g)
                losses.append(F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)))
            expected[name] = torch.stack(losses).mean().item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(v, float) for v in got.values())
    assert not any(watcher.grad_enabled[:6]), "estimate_loss must not build autograd graphs"


def test_estimate_loss_restores_the_mode_even_after_an_error():
    model = tiny_gpt()
    model.train()
    with pytest.raises(ValueError):
        estimate_loss(model, {"val": torch.arange(5)}, 1, 2, 8)
    assert model.training


# ----------------------------------------------------------------------------------------------
# lr_at
# ----------------------------------------------------------------------------------------------


def test_lr_schedule_landmarks():
    lr = [lr_at(s, 1.0, 0.1, 10, 110) for s in range(130)]
    assert lr[0] == pytest.approx(0.1) and lr[4] == pytest.approx(0.5)
    assert lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.55)  # halfway through the cosine
    assert lr[110] == pytest.approx(0.1) and lr[129] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lr[:9], lr[1:10]))
    assert all(a >= b for a, b in zip(lr[10:110], lr[11:111]))


def test_lr_schedule_without_warmup_starts_at_the_peak():
    assert lr_at(0, 3e-4, 3e-5, 0, 100) == pytest.approx(3e-4)


@pytest.mark.parametrize(("warmup", "decay"), [(10, 10), (10, 5), (-1, 5)])
def test_lr_schedule_rejects_impossible_lengths(warmup, decay):
    with pytest.raises(ValueError):
        lr_at(0, 1.0, 0.1, warmup, decay)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _run(steps, model, optimizer, data, start=0):
    """Train with the global random state drawing batches (and dropout); return the losses."""
    losses = []
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, 1e-2, 1e-3, 2, steps)
        x, y = get_batch(data, 4, 8)
        losses.append(train_step(model, optimizer, x, y).item())
    return losses


def test_resume_from_a_checkpoint_continues_exactly(tmp_path):
    data = stream()
    torch.manual_seed(123)
    model = tiny_gpt(dropout=0.2)
    optimizer = make_optimizer(model, 1e-2)
    torch.manual_seed(7)
    straight = _run(8, model, optimizer, data)
    final = [p.detach().clone() for p in model.parameters()]

    # The same run, stopped after 3 steps, then continued in a fresh model and optimizer.
    model = tiny_gpt(dropout=0.2)
    optimizer = make_optimizer(model, 1e-2)
    torch.manual_seed(7)
    first = _run(3, model, optimizer, data)
    save_checkpoint(tmp_path / "ckpt.pt", model, optimizer, 3, note="hello")
    torch.manual_seed(999)  # a new process starts with another random state
    model2 = tiny_gpt(seed=5, dropout=0.2)
    optimizer2 = make_optimizer(model2, 1e-2)
    payload = load_checkpoint(tmp_path / "ckpt.pt", model2, optimizer2)
    assert payload["step"] == 3 and payload["note"] == "hello"
    second = _run(8, model2, optimizer2, data, start=payload["step"])

    assert first + second == straight
    for p, q in zip(model2.parameters(), final):
        assert torch.equal(p, q)


class _Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("cannot save this")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    model = tiny_gpt()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, None, 5)
    good = path.read_bytes()
    with pytest.raises(pickle.PicklingError):
        save_checkpoint(path, model, None, 6, broken=_Unpicklable())
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"], "temporary file left"
    assert load_checkpoint(path)["step"] == 5


def test_load_checkpoint_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint written by save_checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_save_checkpoint_rejects_a_bad_step(tmp_path):
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path / "c.pt", tiny_gpt(), None, -1)


# ----------------------------------------------------------------------------------------------
# The optimizer and the loop
# ----------------------------------------------------------------------------------------------


def test_optimizer_decays_matrices_only():
    model = tiny_gpt()
    decayed, plain = make_optimizer(model, 1e-3, weight_decay=0.1).param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def _fit(config, state=None, model=None, optimizer=None):
    data = {"train": stream(2000, 1), "val": stream(400, 2)}
    model = model or tiny_gpt(dropout=0.1)
    optimizer = optimizer or make_optimizer(model, config.lr)
    records = []
    state = fit(
        model, optimizer, data, config, 8, state=state, on_eval=records.append, progress=False
    )
    return state, records, model, optimizer


def test_fit_learns_and_evaluates_on_schedule():
    config = TrainConfig(
        batch_size=8,
        max_iters=60,
        lr=1e-2,
        min_lr=1e-3,
        warmup_iters=5,
        eval_interval=25,
        eval_iters=4,
    )
    state, records, _, _ = _fit(config)
    assert [r["step"] for r in records] == [0, 25, 50, 60]
    assert len(state.losses) == 60 and state.step == 60
    assert records[-1]["val"] < records[0]["val"] - 0.5
    assert records[0]["val"] == pytest.approx(math.log(VOCAB), abs=0.2)
    assert all(r["tokens_per_s"] > 0 for r in records[1:])


def test_fit_resumes_from_its_state_exactly():
    config = TrainConfig(
        batch_size=8, max_iters=20, lr=1e-2, warmup_iters=2, eval_interval=5, eval_iters=2
    )
    torch.manual_seed(0)
    straight, _, _, _ = _fit(config)

    # Stop at step 10 (with lr_decay_iters fixed so the schedule is the same), then continue.
    torch.manual_seed(0)
    short = dataclasses.replace(config, max_iters=10, lr_decay_iters=20)
    half, _, model, optimizer = _fit(short)
    rng = torch.get_rng_state()
    resumed_state = TrainState.from_checkpoint({"step": half.step, "train_state": half.to_dict()})
    torch.set_rng_state(rng)
    full = dataclasses.replace(config, lr_decay_iters=20)
    resumed, _, _, _ = _fit(full, resumed_state, model, optimizer)
    assert resumed.losses == straight.losses
    assert [e["val"] for e in resumed.evals] == [e["val"] for e in straight.evals]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"batch_size": 0}, ValueError),
        ({"max_iters": 10, "warmup_iters": 10}, ValueError),
        ({"lr": 1e-4, "min_lr": 1e-3}, ValueError),
        ({"batch_size": 2.5}, TypeError),
        ({"seed": True}, TypeError),
    ],
    ids=["zero batch", "warm-up too long", "min_lr above lr", "float batch", "bool seed"],
)
def test_train_config_rejects_bad_settings(changes, error):
    with pytest.raises(error):
        TrainConfig(**changes)
