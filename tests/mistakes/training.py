"""Wrong answers to notebook 11 that the checks cannot name but must fail."""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from course_lib.checks import Mistake
from course_lib.exercises.training import ref_get_batch, ref_lr_at


def _batch_one_start(data, batch_size, seq, generator=None):
    # One start for the whole batch: every row is the same window.
    start = int(torch.randint(len(data) - seq, (1,), generator=generator))
    x = data[start : start + seq].expand(batch_size, seq)
    return x.clone(), data[start + 1 : start + seq + 1].expand(batch_size, seq).clone()


def _batch_ignores_generator(data, batch_size, seq, generator=None):
    return ref_get_batch(data, batch_size, seq, None)


def _batch_hard_coded(data, batch_size, seq, generator=None):
    # Windows at fixed places instead of random ones.
    starts = torch.arange(batch_size) % (len(data) - seq)
    x = torch.stack([data[s : s + seq] for s in starts.tolist()])
    return x, torch.stack([data[s + 1 : s + seq + 1] for s in starts.tolist()])


def _step_clips_values(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _step_summed_loss(model, optimizer, x, y, max_norm):
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item()


def _eval_one_batch(model, splits, eval_iters, batch_size, seq, generator=None):
    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for name, data in splits.items():
            x, y = ref_get_batch(data, batch_size, seq, generator)
            logits = model(x)
            out[name] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    model.train(was_training)
    return out


def _lr_linear_decay(step, max_lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps or step > decay_steps:
        return ref_lr_at(step, max_lr, min_lr, warmup_steps, decay_steps)
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)
    return max_lr - progress * (max_lr - min_lr)


def _lr_cosine_full_period(step, max_lr, min_lr, warmup_steps, decay_steps):
    if step < warmup_steps or step > decay_steps:
        return ref_lr_at(step, max_lr, min_lr, warmup_steps, decay_steps)
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(2 * math.pi * progress)) * (max_lr - min_lr)


def _save_whole_model(path, model, optimizer, step):
    payload = {
        "model": model,
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": torch.get_rng_state(),
    }
    torch.save(payload, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def _load_step_plus_one(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])
    return checkpoint["step"] + 1


EXTRA_MISTAKES = {
    "get_batch": [
        Mistake("one start for the whole batch", "", _batch_one_start),
        Mistake("the generator is ignored", "", _batch_ignores_generator),
        Mistake("windows at fixed places", "", _batch_hard_coded),
    ],
    "train_step": [
        Mistake("gradient values clipped instead of the norm", "", _step_clips_values),
        Mistake("summed loss instead of the mean", "", _step_summed_loss),
    ],
    "estimate_loss": [Mistake("one batch per split", "", _eval_one_batch)],
    "lr_at": [
        Mistake("linear decay", "", _lr_linear_decay),
        Mistake("a full cosine period", "", _lr_cosine_full_period),
    ],
    "save_checkpoint": [Mistake("the model object pickled", "", _save_whole_model)],
    "load_checkpoint": [Mistake("the step returned plus one", "", _load_step_plus_one)],
}
