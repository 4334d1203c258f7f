"""Checks for notebook 11, training a GPT.

The references are the functions of ``course_lib.training`` in the exact form the notebook
asks for. Each check runs the learner's function inside a small, seeded experiment on a tiny
GPT (a few training steps, an evaluation, a run stopped and resumed) and compares what comes
out with the same experiment run with the reference, so a mistake shows up as the quantity it
spoils: a loss, a parameter, the model's mode, a learning rate.

:func:`your_parts` assembles a GPT from the learner's own components of earlier notebooks,
each one used only if it passes its notebook's check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
import math
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import causal_mask
from course_lib.checks import Case, CheckFailure, Mistake, check_function, fail
from course_lib.decoder import DecoderBlock
from course_lib.exercises import Exercise
from course_lib.gpt import GPT, GPTConfig, GPTParts
from course_lib.head import LMHead
from course_lib.training import estimate_loss, get_batch, load_checkpoint, lr_at, save_checkpoint
from course_lib.training import train_step as library_train_step

__all__ = ["EXERCISES", "tiny_gpt", "your_parts"]

# The tiny GPT every check trains: 11 tokens, 8 positions, one block of width 16.
TINY = GPTConfig(vocab=11, max_seq=8, d_model=16, n_heads=2, n_layers=1)


def tiny_gpt(seed: int, dropout: float = 0.0) -> GPT:
    """A tiny GPT whose weights depend only on ``seed``."""
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(TINY, dropout=dropout))


def _stream(n: int, seed: int, vocab: int = TINY.vocab) -> torch.Tensor:
    """A seeded random token stream of length ``n``."""
    return torch.randint(vocab, (n,), generator=torch.Generator().manual_seed(seed))


def _flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)  # (batch, seq, vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


# ----------------------------------------------------------------------------------------------
# References, in the exact form the notebook asks for
# ----------------------------------------------------------------------------------------------


def ref_get_batch(data, batch_size, seq, generator=None):
    return get_batch(data, batch_size, seq, generator)


def ref_train_step(model, optimizer, x, y, max_norm):
    return library_train_step(model, optimizer, x, y, max_norm).item()


def ref_estimate_loss(model, splits, eval_iters, batch_size, seq, generator=None):
    return estimate_loss(model, splits, eval_iters, batch_size, seq, generator)


def ref_lr_at(step, max_lr, min_lr, warmup_steps, decay_steps):
    return lr_at(step, max_lr, min_lr, warmup_steps, decay_steps)


def ref_save_checkpoint(path, model, optimizer, step):
    save_checkpoint(path, model, optimizer, step)


def ref_load_checkpoint(path, model, optimizer):
    return load_checkpoint(path, model, optimizer)["step"]


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


def _windows(data, starts, seq, offset=0):
    return torch.stack([data[s + offset : s + offset + seq] for s in starts.tolist()])


def _batch_not_shifted(data, batch_size, seq, generator=None):
    starts = torch.randint(len(data) - seq, (batch_size,), generator=generator)
    x = _windows(data, starts, seq)
    return x, x.clone()


def _batch_swapped(data, batch_size, seq, generator=None):
    starts = torch.randint(len(data) - seq, (batch_size,), generator=generator)
    return _windows(data, starts, seq, 1), _windows(data, starts, seq)


def _batch_misses_last_window(data, batch_size, seq, generator=None):
    starts = torch.randint(len(data) - seq - 1, (batch_size,), generator=generator)
    return _windows(data, starts, seq), _windows(data, starts, seq, 1)


def _batch_stacked_by_position(data, batch_size, seq, generator=None):
    starts = torch.randint(len(data) - seq, (batch_size,), generator=generator)
    x = torch.stack([data[s : s + seq] for s in starts.tolist()], dim=1)
    y = torch.stack([data[s + 1 : s + seq + 1] for s in starts.tolist()], dim=1)
    return x, y


def _step_without_zero_grad(model, optimizer, x, y, max_norm):
    loss = _loss(model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _step_zero_grad_after_backward(model, optimizer, x, y, max_norm):
    loss = _loss(model, x, y)
    loss.backward()
    optimizer.zero_grad()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _step_clip_after_step(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    loss = _loss(model, x, y)
    loss.backward()
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return loss.item()


def _step_returns_tensor(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    loss = _loss(model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss


def _mean_losses(model, splits, eval_iters, batch_size, seq, generator):
    out = {}
    for name, data in splits.items():
        losses = [
            _loss(model, *ref_get_batch(data, batch_size, seq, generator)).item()
            for _ in range(eval_iters)
        ]
        out[name] = sum(losses) / len(losses)
    return out


def _eval_in_train_mode(model, splits, eval_iters, batch_size, seq, generator=None):
    with torch.no_grad():
        return _mean_losses(model, splits, eval_iters, batch_size, seq, generator)


def _eval_not_restored(model, splits, eval_iters, batch_size, seq, generator=None):
    model.eval()
    with torch.no_grad():
        return _mean_losses(model, splits, eval_iters, batch_size, seq, generator)


def _eval_with_graph(model, splits, eval_iters, batch_size, seq, generator=None):
    was_training = model.training
    model.eval()
    out = _mean_losses(model, splits, eval_iters, batch_size, seq, generator)
    model.train(was_training)
    return out


def _eval_always_back_to_train(model, splits, eval_iters, batch_size, seq, generator=None):
    model.eval()
    with torch.no_grad():
        out = _mean_losses(model, splits, eval_iters, batch_size, seq, generator)
    model.train()
    return out


def _cosine(step, max_lr, min_lr, start, end):
    progress = (step - start) / (end - start)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def _lr_warmup_from_zero(step, max_lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return (
        min_lr if step > decay_steps else _cosine(step, max_lr, min_lr, warmup_steps, decay_steps)
    )


def _lr_cosine_from_zero(step, max_lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return min_lr if step > decay_steps else _cosine(step, max_lr, min_lr, 0, decay_steps)


def _lr_decays_to_zero(step, max_lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return 0.0 if step > decay_steps else _cosine(step, max_lr, 0.0, warmup_steps, decay_steps)


def _lr_no_floor(step, max_lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return _cosine(step, max_lr, min_lr, warmup_steps, decay_steps)


def _atomic_save(path, payload):
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _save_without_optimizer(path, model, optimizer, step):
    _atomic_save(path, {"model": model.state_dict(), "step": step, "rng": torch.get_rng_state()})


def _save_without_rng(path, model, optimizer, step):
    _atomic_save(
        path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    )


def _save_without_step(path, model, optimizer, step):
    _atomic_save(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        },
    )


def _save_in_place(path, model, optimizer, step):
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng": torch.get_rng_state(),
        },
        path,
    )


def _load_without_optimizer(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    torch.set_rng_state(checkpoint["rng"])
    return checkpoint["step"]


def _load_without_rng(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["step"]


def _load_without_model(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])
    return checkpoint["step"]


def _load_returns_nothing(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])


EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


BATCH_MISTAKES = _register("get_batch", "get_batch", [
    Mistake("targets not shifted",
            "the target of position t is the token at t + 1: take the targets from "
            "data[start + 1 : start + seq + 1]",
            _batch_not_shifted),
    Mistake("inputs and targets swapped",
            "the inputs start at `start`, the targets one token later",
            _batch_swapped),
    Mistake("the last window can never be drawn",
            "starts run from 0 to len(data) - seq - 1 inclusive: "
            "torch.randint(len(data) - seq, ...) already excludes its upper bound",
            _batch_misses_last_window),
    Mistake("windows stacked along the wrong dimension",
            "stack the windows as rows, torch.stack(windows) (dim=0), to get (batch, seq)",
            _batch_stacked_by_position),
])  # fmt: skip

STEP_MISTAKES = _register("train_step", "train_step", [
    Mistake("zero_grad forgotten",
            "backward() adds to .grad: call optimizer.zero_grad() before each backward pass, "
            "or the gradients of all earlier steps pile up",
            _step_without_zero_grad),
    Mistake("gradients cleared between backward and step",
            "optimizer.zero_grad() belongs before the forward pass; between backward() and "
            "step() it throws away the gradients just computed",
            _step_zero_grad_after_backward),
    Mistake("gradients clipped after the optimizer step",
            "clip_grad_norm_ must run between loss.backward() and optimizer.step(); after the "
            "step the update has already used the unclipped gradients",
            _step_clip_after_step),
    Mistake("the loss returned as a tensor",
            "return loss.item(), a Python float: keeping the tensor keeps its whole autograd "
            "graph alive",
            _step_returns_tensor),
])  # fmt: skip

EVAL_MISTAKES = _register("estimate_loss", "estimate_loss", [
    Mistake("dropout left on (the model was not put in evaluation mode)",
            "call model.eval() before measuring: in training mode dropout adds noise to every "
            "estimate",
            _eval_in_train_mode),
    Mistake("the model was left in evaluation mode",
            "remember model.training before model.eval() and restore it with "
            "model.train(was_training) at the end",
            _eval_not_restored),
    Mistake("an autograd graph was built during evaluation",
            "wrap the forward passes in `with torch.no_grad():` (or decorate the function "
            "with @torch.no_grad()); evaluation needs no gradients",
            _eval_with_graph),
    Mistake("the model was switched to training mode even though it started in evaluation mode",
            "restore the mode the model had (model.train(was_training)), not always train()",
            _eval_always_back_to_train),
])  # fmt: skip

LR_MISTAKES = _register("lr_at", "lr_at", [
    Mistake("warm-up off by one (step 0 gets a learning rate of zero)",
            "use (step + 1) / warmup_steps: step 0 must already move the weights, and step "
            "warmup_steps - 1 reaches max_lr",
            _lr_warmup_from_zero),
    Mistake("the cosine counts from step 0 instead of from the end of warm-up",
            "progress = (step - warmup_steps) / (decay_steps - warmup_steps), so the decay "
            "starts at max_lr right after the warm-up",
            _lr_cosine_from_zero),
    Mistake("the learning rate decays to zero instead of min_lr",
            "lr = min_lr + 0.5 * (1 + cos(pi * progress)) * (max_lr - min_lr)",
            _lr_decays_to_zero),
    Mistake("no floor after decay_steps (the cosine rises again)",
            "after decay_steps return min_lr; cos(pi * progress) climbs back for progress > 1",
            _lr_no_floor),
])  # fmt: skip

SAVE_MISTAKES = _register("save_checkpoint", "save_checkpoint", [
    Mistake("the optimizer state is not saved",
            "save optimizer.state_dict() too: AdamW's running averages are part of the run, "
            "and without them the resumed steps differ",
            _save_without_optimizer),
    Mistake("the random state is not saved",
            "save torch.get_rng_state(): the batches and dropout masks after the resume must "
            "be the ones the uninterrupted run would have drawn",
            _save_without_rng),
    Mistake("the step is not saved",
            "save the step so that the run (and its learning-rate schedule) continues where it "
            "stopped instead of starting again from step 0",
            _save_without_step),
    Mistake("the checkpoint is written in place, not atomically",
            "torch.save to a temporary file next to it, then os.replace(tmp, path): a save "
            "that fails half-way must leave the previous checkpoint readable",
            _save_in_place),
])  # fmt: skip

LOAD_MISTAKES = _register("load_checkpoint", "load_checkpoint", [
    Mistake("the optimizer state is not restored",
            "call optimizer.load_state_dict(checkpoint['optimizer']) as well",
            _load_without_optimizer),
    Mistake("the random state is not restored",
            "call torch.set_rng_state(checkpoint['rng']) so the batches and dropout continue "
            "exactly",
            _load_without_rng),
    Mistake("the model weights are not restored",
            "call model.load_state_dict(checkpoint['model'])",
            _load_without_model),
    Mistake("the saved step is not returned",
            "return checkpoint['step']: the training loop continues from it",
            _load_returns_nothing),
])  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Experiments that run a learner's function (or the reference, or a mistake)
# ----------------------------------------------------------------------------------------------


def _wrap(mistakes: list[Mistake], runner: Callable) -> list[Mistake]:
    """The mistakes, each run through the same experiment as the learner's function."""
    return [Mistake(m.name, m.hint, runner(m.impl)) for m in mistakes]


def _batch_runner(fn):
    def run(n, batch_size, seq, seed):
        data = _stream(n, seed + 100, vocab=1000)
        inputs, targets = fn(data, batch_size, seq, torch.Generator().manual_seed(seed))
        return {"inputs": inputs, "targets": targets}

    return run


def _step_runner(fn):
    def run(seed, steps, max_norm, batch_size, lr):
        model = tiny_gpt(seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        data, batches = _stream(400, seed), torch.Generator().manual_seed(seed)
        returned = []
        for _ in range(steps):
            x, y = ref_get_batch(data, batch_size, TINY.max_seq, batches)
            returned.append(fn(model, optimizer, x, y, max_norm))
        kinds = sorted({type(r).__name__ for r in returned})
        values = torch.tensor([float(r.detach() if torch.is_tensor(r) else r) for r in returned])
        return {
            "type of the returned loss": "/".join(kinds),
            "returned losses": values,
            "parameters after the steps": _flat_parameters(model),
        }

    return run


def _eval_runner(fn):
    def run(seed, eval_iters, batch_size, start_mode):
        model = tiny_gpt(seed, dropout=0.3)
        model.train(start_mode == "train")
        grad_enabled = []
        model.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
        splits = {"train": _stream(300, seed + 1), "val": _stream(200, seed + 2)}
        torch.manual_seed(seed + 3)  # the dropout masks, if dropout is (wrongly) on
        got = fn(
            model,
            splits,
            eval_iters,
            batch_size,
            TINY.max_seq,
            torch.Generator().manual_seed(seed),
        )
        if not isinstance(got, dict):
            fail(f"estimate_loss should return a dict of split -> loss, got {type(got).__name__}")
        return {
            "splits returned": list(got),
            "mean losses": torch.tensor([float(got[k]) for k in got]),
            "model.training after the call": model.training,
            "autograd graph built during the evaluation": any(grad_enabled),
        }

    return run


def _schedule_runner(fn):
    def run(max_lr, min_lr, warmup_steps, decay_steps, last_step):
        return [fn(step, max_lr, min_lr, warmup_steps, decay_steps) for step in range(last_step)]

    return run


class _Unpicklable:
    """A value that makes torch.save fail part-way through writing."""

    def __reduce__(self):
        raise pickle.PicklingError("this value cannot be saved (a simulated crash)")


class _CrashingModel(nn.Module):
    """A model whose state dict holds a value that cannot be saved."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def state_dict(self, *args, **kwargs):
        return {**self.inner.state_dict(*args, **kwargs), "crash": _Unpicklable()}


def _read_any(path):
    """Load a learner's checkpoint the way a loader would, or fail with a clear message."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:
        fail(
            f"the checkpoint cannot be read with torch.load(path, weights_only=True): {error}. "
            "Save a dict of state dicts, tensors and numbers, not the model object"
        )


def _forgiving_load(path, model, optimizer):
    """Restore whatever a checkpoint holds; a missing part is simply not restored."""
    checkpoint = _read_any(path)
    if not isinstance(checkpoint, dict):
        fail(f"the checkpoint should be a dict, got {type(checkpoint).__name__}")
    if "model" in checkpoint:
        model.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if "rng" in checkpoint:
        torch.set_rng_state(checkpoint["rng"])
    return checkpoint.get("step", 0)


def _train_for(model, optimizer, data, start, stop, total):
    """Steps start..stop-1 of a run of ``total`` steps; batches and dropout use the global RNG."""
    losses = []
    for step in range(start, stop):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, 1e-2, 1e-3, 2, total)
        x, y = ref_get_batch(data, 4, TINY.max_seq)
        losses.append(ref_train_step(model, optimizer, x, y, 1.0))
    return losses


def _resume_runner(save, load):
    def run(seed, total, stop):
        with tempfile.TemporaryDirectory(prefix="course-ckpt-") as folder:
            path = os.path.join(folder, "ckpt.pt")
            data = _stream(500, seed)

            # Train, stop and save.
            model = tiny_gpt(seed, dropout=0.2)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
            torch.manual_seed(seed + 1)
            losses = _train_for(model, optimizer, data, 0, stop, total)
            save(path, model, optimizer, stop)

            # A new process: other weights, a fresh optimizer, another random state.
            model = tiny_gpt(seed + 1000, dropout=0.2)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
            torch.manual_seed(seed + 2000)
            start = load(path, model, optimizer)
            if isinstance(start, int) and not isinstance(start, bool) and 0 <= start <= total:
                losses += _train_for(model, optimizer, data, start, total, total)

            # A save that crashes half-way must leave the last good checkpoint readable.
            with contextlib.suppress(Exception):
                save(path, _CrashingModel(model), optimizer, total)
            try:
                readable = "step" in torch.load(path, weights_only=True)
            except Exception:
                readable = False
            return {
                "step returned by load_checkpoint": start,
                "losses of the resumed run": torch.tensor(losses),
                "parameters at the end": _flat_parameters(model),
                "previous checkpoint readable after a crashed save": readable,
            }

    return run


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def check_get_batch(fn, cases=None) -> None:
    """Check ``get_batch(data, batch_size, seq, generator) -> (inputs, targets)``.

    A case is ``Case((n, batch_size, seq, seed))``: a random stream of ``n`` tokens and a
    generator seeded with ``seed``.
    """
    default = [
        Case((200, 4, 8, 0), label="4 windows of 8"),
        Case((1000, 16, 32, 1), label="16 windows of 32"),
        Case((12, 8, 10, 2), label="only two possible windows"),
    ]
    check_function(
        _batch_runner(fn),
        _batch_runner(ref_get_batch),
        _cases(cases, default),
        name="get_batch",
        mistakes=_wrap(BATCH_MISTAKES, _batch_runner),
    )


def check_train_step(fn, cases=None) -> None:
    """Check ``train_step(model, optimizer, x, y, max_norm) -> float`` over a few steps.

    A case is ``Case((seed, steps, max_norm, batch_size, lr))``; a tiny GPT is trained with
    SGD (momentum 0.9) on seeded batches.
    """
    default = [
        Case((0, 3, 0.1, 4, 0.5), label="3 steps, clipping at 0.1"),
        Case((1, 2, 1e9, 8, 0.1), label="2 steps, no clipping needed"),
    ]
    check_function(
        _step_runner(fn),
        _step_runner(ref_train_step),
        _cases(cases, default),
        name="train_step",
        mistakes=_wrap(STEP_MISTAKES, _step_runner),
    )


def check_estimate_loss(fn, cases=None) -> None:
    """Check ``estimate_loss(model, splits, eval_iters, batch_size, seq, generator) -> dict``.

    A case is ``Case((seed, eval_iters, batch_size, start_mode))``, ``start_mode`` "train" or
    "eval": the mode the model is in when ``estimate_loss`` is called (it has dropout 0.3).
    """
    default = [
        Case((0, 3, 4, "train"), label="a model in training mode"),
        Case((1, 2, 8, "eval"), label="a model already in evaluation mode"),
    ]
    check_function(
        _eval_runner(fn),
        _eval_runner(ref_estimate_loss),
        _cases(cases, default),
        name="estimate_loss",
        mistakes=_wrap(EVAL_MISTAKES, _eval_runner),
    )


def check_lr_at(fn, cases=None) -> None:
    """Check ``lr_at(step, max_lr, min_lr, warmup_steps, decay_steps) -> float``.

    A case is ``Case((max_lr, min_lr, warmup_steps, decay_steps, last_step))``; the learning
    rate of every step from 0 to ``last_step - 1`` is compared.
    """
    default = [
        Case((1e-3, 1e-4, 10, 100, 120), label="10 warm-up steps, decay until 100"),
        Case((6e-4, 6e-5, 3, 20, 25), label="a short schedule"),
    ]
    check_function(
        _schedule_runner(fn),
        _schedule_runner(ref_lr_at),
        _cases(cases, default),
        name="lr_at",
        mistakes=_wrap(LR_MISTAKES, _schedule_runner),
    )


def check_save_checkpoint(fn, cases=None) -> None:
    """Check ``save_checkpoint(path, model, optimizer, step)`` by stopping and resuming a run.

    A case is ``Case((seed, total_steps, stop_at))``. The run is saved with your function at
    ``stop_at``, loaded into a fresh model and optimizer (restoring whatever the checkpoint
    holds), and finished; it must match the uninterrupted run. Then a save that crashes
    half-way must leave the checkpoint readable.
    """
    default = [Case((0, 6, 3), label="6 steps, stopped after 3")]

    def runner(save):
        return _resume_runner(save, _forgiving_load)

    check_function(
        runner(fn),
        _resume_runner(ref_save_checkpoint, ref_load_checkpoint),
        _cases(cases, default),
        name="save_checkpoint",
        mistakes=_wrap(SAVE_MISTAKES, runner),
        verified="a run stopped, saved, resumed and finished, and a save that crashes half-way",
    )


def check_load_checkpoint(fn, cases=None) -> None:
    """Check ``load_checkpoint(path, model, optimizer) -> int`` by resuming a saved run.

    A case is ``Case((seed, total_steps, stop_at))``: the run is saved by the reference at
    ``stop_at``, resumed with your function in a fresh model and optimizer, and finished.
    """
    default = [Case((0, 6, 3), label="6 steps, stopped after 3")]

    def runner(load):
        return _resume_runner(ref_save_checkpoint, load)

    check_function(
        runner(fn),
        runner(ref_load_checkpoint),
        _cases(cases, default),
        name="load_checkpoint",
        mistakes=_wrap(LOAD_MISTAKES, runner),
        verified="a run stopped, saved, resumed and finished",
    )


# ----------------------------------------------------------------------------------------------
# Your GPT: the learner's own components from earlier notebooks
# ----------------------------------------------------------------------------------------------


class _CausalAttention(nn.Module):
    """Adapt a learner's ``MultiHeadAttention(d_model, n_heads)`` to the block's call.

    The reference block calls ``self_attn(h, mask=None, is_causal=True)``; the notebook's
    attention takes an explicit mask, so the causal mask is built here.
    """

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attn = attention

    def forward(self, h, mask=None, is_causal=False):
        if is_causal:
            causal = causal_mask(h.shape[1], device=h.device)  # (seq, seq)
            mask = causal if mask is None else mask & causal
        return self.attn(h, mask=mask)


class _BlockWithYourParts(DecoderBlock):
    """The reference GPT block with its attention, feed-forward or norms replaced by yours.

    It takes no key-value cache (your attention exposes no cache), so generation recomputes
    the context at every step.
    """

    def __init__(
        self,
        d_model,
        n_heads,
        d_ff=None,
        dropout=0.0,
        *,
        attention=None,
        feedforward=None,
        norm=None,
    ):
        super().__init__(d_model, n_heads, d_ff, dropout)
        if attention is not None:
            self.self_attn = _CausalAttention(attention(d_model, n_heads))
        if feedforward is not None:
            self.ff = feedforward(d_model, d_ff)
        if norm is not None:
            self.norm1, self.norm2 = norm(d_model), norm(d_model)

    def forward(self, x, mask=None):
        return super().forward(x, mask=mask)


def _tied_head(head_class):
    """A head factory from the notebook's ``TiedHead(embedding)``; untied uses the reference."""

    def build(d_model, vocab, tie_to=None):
        return head_class(tie_to) if tie_to is not None else LMHead(d_model, vocab)

    return build


# The components a GPT is made of, by the class name the earlier notebooks give them.
_YOURS = (
    "Embedding",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "FeedForward",
    "LayerNorm",
    "TiedHead",
)


@functools.lru_cache(maxsize=16)
def _definitions(path: Path, mtime: float) -> dict:
    """Run a notebook's import statements and answer cells; return the names they define.

    Only imports and the learner's answer cells run (not the demonstrations), so loading takes
    seconds. An answer cell that fails is skipped.
    """
    import ast

    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    namespace: dict = {"__name__": f"notebook_{path.stem}"}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for cell in code:
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            with contextlib.suppress(Exception):
                exec(compile(ast.Module(imports, []), str(path), "exec"), namespace)
        for cell in code:
            if cell.metadata.get("nbgrader", {}).get("solution"):
                with contextlib.suppress(Exception):
                    exec(compile(cell.source, str(path), "exec"), namespace)
    return namespace


def _find_yours(notebooks_dir: Path) -> dict[str, tuple[Path, object, str]]:
    """Where each component is an exercise: class name -> (notebook, checks module, exercise)."""
    from course_lib.release import ASSIGNMENT_PATTERN

    found = {}
    folders = sorted(notebooks_dir.iterdir()) if notebooks_dir.is_dir() else []
    for folder in folders:
        path = folder / f"{folder.name}.ipynb"
        if not (ASSIGNMENT_PATTERN.match(folder.name) and path.is_file()):
            continue
        try:
            module = importlib.import_module(f"course_lib.exercises.{folder.name[3:]}")
        except ModuleNotFoundError:
            continue
        for exercise in getattr(module, "EXERCISES", {}).values():
            if exercise.symbol in _YOURS and exercise.symbol not in found:
                found[exercise.symbol] = (path, module, exercise.id)
    return found


def your_parts(notebooks_dir: str | Path = "..") -> GPTParts:
    """Assemble :class:`GPTParts` from your components of the earlier notebooks.

    Each component (``Embedding``, ``LearnedPositionalEmbedding``, ``MultiHeadAttention``,
    ``FeedForward``, ``LayerNorm``, ``TiedHead``) is taken from your notebook in
    ``notebooks_dir`` and used only if it passes that notebook's check; otherwise the
    reference from ``course_lib`` is used. Prints one line per component saying which.
    """
    notebooks_dir = Path(notebooks_dir)
    yours: dict[str, type] = {}
    lines = []
    found = _find_yours(notebooks_dir)
    for name in _YOURS:
        if name not in found:
            lines.append(f"  {name:28} reference (no notebook with it in {notebooks_dir})")
            continue
        path, module, exercise = found[name]
        candidate = _definitions(path, path.stat().st_mtime).get(name)
        try:
            if candidate is None:
                raise CheckFailure(f"{name} is not defined in {path.name}")
            with contextlib.redirect_stdout(io.StringIO()):
                getattr(module, f"check_{exercise}")(candidate)
        except NotImplementedError:
            lines.append(f"  {name:28} reference (yours is not written yet)")
            continue
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            lines.append(
                f"  {name:28} reference (yours does not pass its check yet: "
                f"{type(error).__name__} {reason[:80]})"
            )
            continue
        yours[name] = candidate
        lines.append(f"  {name:28} yours, from {path.name}")
    print("Components of your GPT:\n" + "\n".join(lines))

    parts = GPTParts()
    block_parts = {
        "attention": yours.get("MultiHeadAttention"),
        "feedforward": yours.get("FeedForward"),
        "norm": yours.get("LayerNorm"),
    }
    return GPTParts(
        embedding=yours.get("Embedding", parts.embedding),
        positional=yours.get("LearnedPositionalEmbedding", parts.positional),
        block=(
            functools.partial(_BlockWithYourParts, **block_parts)
            if any(block_parts.values())
            else parts.block
        ),
        norm=yours.get("LayerNorm", parts.norm),
        head=_tied_head(yours["TiedHead"]) if "TiedHead" in yours else parts.head,
    )
