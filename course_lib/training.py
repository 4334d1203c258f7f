"""Training a language model: batches, the optimisation step, evaluation, schedule, checkpoints.

The pieces, each a small function that notebook 11 asks the learner to write:

- :func:`get_batch` draws random windows of a token stream; the targets are the inputs
  shifted by one position.
- :func:`train_step` runs one forward pass, the loss, the backward pass, gradient clipping and
  the optimizer step.
- :func:`estimate_loss` averages the loss over a few batches per split, in evaluation mode and
  without building autograd graphs.
- :func:`lr_at` gives the learning rate at a step: linear warm-up, then cosine decay.
- :func:`save_checkpoint` / :func:`load_checkpoint` write and read everything a run needs to
  continue exactly where it stopped: model, optimizer, step and random state. Saving is
  atomic: a crash during a save leaves the previous checkpoint intact.

:func:`fit` ties them into the training loop used by ``course train`` (progress bar, one log
line per evaluation, periodic checkpoints, automatic mixed precision on CUDA, and
DistributedDataParallel when the model is wrapped in it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "TrainState",
    "autocast_for",
    "estimate_loss",
    "fit",
    "get_batch",
    "load_checkpoint",
    "lr_at",
    "make_optimizer",
    "save_checkpoint",
    "train_step",
]

logger = logging.getLogger(__name__)

# The value of the "format" key that marks a file written by save_checkpoint.
CHECKPOINT_FORMAT = "course-checkpoint-v1"


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    seq: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` random windows of ``seq`` tokens and their next-token targets.

    The window starts are drawn with one call,
    ``torch.randint(len(data) - seq, (batch_size,), generator=generator)``, so a seeded
    generator always gives the same batch. Row ``b`` of the inputs is
    ``data[start_b : start_b + seq]`` and row ``b`` of the targets is the same window moved one
    token later, ``data[start_b + 1 : start_b + seq + 1]``.

    Args:
        data: the token stream, a 1-D integer tensor (on the CPU).
        batch_size: windows per batch (the global batch when ``world_size > 1``).
        seq: tokens per window.
        generator: the random generator for the starts (the global one when ``None``).
        device: where to put the batch; on CUDA the copy goes through pinned memory.
        rank, world_size: with several processes, every process draws the same global batch
            and keeps its own contiguous share of ``batch_size // world_size`` rows.

    Returns:
        ``(inputs, targets)``, each a LongTensor of shape (batch, seq).
    """
    if data.dim() != 1 or data.is_floating_point():
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if seq < 1 or len(data) <= seq:
        raise ValueError(f"seq must be between 1 and len(data) - 1 = {len(data) - 1}, got {seq}")
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(
            f"batch_size must be a positive multiple of world_size={world_size}, got {batch_size}"
        )

    # Draw the global batch, then keep this process's rows.
    starts = torch.randint(len(data) - seq, (batch_size,), generator=generator)
    share = batch_size // world_size
    starts = starts[rank * share : (rank + 1) * share]

    # Gather every window of seq + 1 tokens at once; inputs and targets overlap by seq - 1.
    windows = data[starts[:, None] + torch.arange(seq + 1)].long()  # (batch, seq + 1)
    x, y = windows[:, :-1], windows[:, 1:]  # (batch, seq) each
    if device is not None and torch.device(device).type == "cuda":
        return (
            x.pin_memory().to(device, non_blocking=True),
            y.pin_memory().to(device, non_blocking=True),
        )
    if device is not None:
        return x.to(device), y.to(device)
    return x.contiguous(), y.contiguous()


# ----------------------------------------------------------------------------------------------
# One step, evaluation, schedule
# ----------------------------------------------------------------------------------------------


def autocast_for(device: torch.device | str, dtype: torch.dtype | None):
    """Return the autocast context for ``device``: mixed precision on CUDA, nothing elsewhere.

    ``dtype`` is ``torch.bfloat16`` or ``torch.float16`` for mixed precision on CUDA, or
    ``None`` (or ``torch.float32``) for plain float32. On the CPU and on MPS the context does
    nothing: the course trains those in float32.
    """
    device = torch.device(device)
    if device.type != "cuda" or dtype in (None, torch.float32):
        return contextlib.nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"mixed precision dtype must be bfloat16 or float16, got {dtype}")
    return torch.autocast(device_type="cuda", dtype=dtype)


def _lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of next-token logits (batch, seq, vocab) against targets (batch, seq)."""
    vocab = logits.size(-1)
    flat = logits.reshape(-1, vocab)  # (batch * seq, vocab)
    return F.cross_entropy(flat.float(), targets.reshape(-1))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    max_norm: float | None = 1.0,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Run one optimisation step on the batch ``(x, y)``; return the loss, detached.

    The order matters: clear the old gradients, forward, loss, backward, clip the gradient norm
    to ``max_norm`` (skipped when ``None``), then step. The loss is returned as a detached
    scalar tensor so that the caller decides when to wait for it (``.item()`` synchronises
    with a GPU).

    Args:
        model: maps ids (batch, seq) to logits (batch, seq, vocab).
        optimizer: the optimizer over the model's parameters.
        x, y: inputs and targets, LongTensors of shape (batch, seq).
        max_norm: the largest gradient norm allowed.
        amp_dtype: mixed precision dtype on CUDA (see :func:`autocast_for`).
        scaler: a gradient scaler, needed only for float16 mixed precision.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast_for(x.device, amp_dtype):
        loss = _lm_loss(model(x), y)

    # Backward, then clip the true (unscaled) gradients, then step.
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    splits: Mapping[str, torch.Tensor],
    eval_iters: int,
    batch_size: int,
    seq: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Estimate the loss on each split as the mean over ``eval_iters`` random batches.

    The model runs in evaluation mode (no dropout) and without autograd; its previous mode
    is restored afterwards. Batches come from :func:`get_batch` with ``generator``, split
    after split in the order of ``splits``.

    Args:
        model: maps ids (batch, seq) to logits (batch, seq, vocab).
        splits: token streams by name, e.g. ``{"train": ..., "val": ...}``.
        eval_iters: batches per split.
        batch_size, seq: the size of each batch.
        generator: random generator for the batches (the global one when ``None``).
        device, amp_dtype: where to run, and mixed precision on CUDA.

    Returns:
        The mean loss per split, as floats.
    """
    if eval_iters < 1:
        raise ValueError(f"eval_iters must be at least 1, got {eval_iters}")
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        result = {}
        for name, data in splits.items():
            losses = torch.zeros(eval_iters, device=device)
            for i in range(eval_iters):
                x, y = get_batch(data, batch_size, seq, generator, device=device)
                with autocast_for(device, amp_dtype):
                    losses[i] = _lm_loss(model(x), y)
            result[name] = losses.mean().item()
    finally:
        model.train(was_training)
    return result


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Return the learning rate for optimizer step ``step`` (counted from 0).

    - Warm-up, ``step < warmup_steps``: linear, ``max_lr * (step + 1) / warmup_steps``, so the
      very first step already moves and step ``warmup_steps - 1`` uses ``max_lr``.
    - Decay, ``warmup_steps <= step <= decay_steps``: half a cosine from ``max_lr`` down to
      ``min_lr``, with ``progress = (step - warmup_steps) / (decay_steps - warmup_steps)``.
    - After ``decay_steps``: ``min_lr``.

    >>> lr_at(0, 1.0, 0.1, 10, 100), lr_at(9, 1.0, 0.1, 10, 100), lr_at(100, 1.0, 0.1, 10, 100)
    (0.1, 1.0, 0.1)
    """
    if warmup_steps < 0 or decay_steps <= warmup_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < decay_steps, got warmup_steps={warmup_steps}, "
            f"decay_steps={decay_steps}"
        )
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step > decay_steps:
        return min_lr
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (weights, embeddings) and none on vectors.

    Biases and normalisation gains are 1-D; decaying them towards zero only hurts. On CUDA the
    fused implementation is used.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = bool(params) and params[0].device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    **extra: Any,
) -> Path:
    """Write model, optimizer, step and random state to ``path``, atomically.

    The checkpoint is a dict with the keys ``"model"`` (the state dict), ``"optimizer"``,
    ``"step"`` (optimizer steps completed: the step to run next), ``"rng"`` (the global CPU
    random state, ``torch.get_rng_state()``), ``"cuda_rng"`` when CUDA is in use, and any
    ``extra`` entries (plain Python values and tensors, so that
    ``torch.load(weights_only=True)`` reads it).

    It is written to a temporary file in the same folder, flushed to disk, then renamed over
    ``path`` with ``os.replace``: a reader sees either the old file or the new one, never half
    of one, even if the process dies during the save.

    Returns:
        The path written.
    """
    path = Path(path)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "rng": torch.get_rng_state(),
        **extra,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        payload["cuda_rng"] = torch.cuda.get_rng_state_all()

    # Write beside the target, make it durable, then swap it in.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and restore what is given.

    Args:
        path: the checkpoint file.
        model: receives the saved weights (strictly: every key must match).
        optimizer: receives the saved optimizer state (moments and step counts).
        restore_rng: set the global random state back to the saved one, so that dropout and
            batches continue exactly as in an uninterrupted run.

    Returns:
        The whole checkpoint dict; ``["step"]`` is the step to run next.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a checkpoint of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # Tensors stay on the CPU: load_state_dict copies them to the model's device.
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and unpickling errors alike
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint")

    if model is not None:
        _unwrap(model).load_state_dict(payload["model"])
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise ValueError(f"{path} holds no optimizer state to resume from")
        optimizer.load_state_dict(payload["optimizer"])
    if restore_rng:
        torch.set_rng_state(payload["rng"])
        if "cuda_rng" in payload and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


def _check_field_types(config: Any) -> None:
    """Raise TypeError for a dataclass field whose value has the wrong type.

    The expected type is the type of the field's default; an int is accepted for a float.
    """
    for f in fields(config):
        value, default = getattr(config, f.name), f.default
        if default is None:
            continue
        expected = (int, float) if type(default) is float else type(default)
        if isinstance(value, bool) is not isinstance(default, bool) or not isinstance(
            value, expected
        ):
            raise TypeError(
                f"{type(config).__name__}.{f.name} must be {type(default).__name__}, got {value!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the optimisation loop (the model's live in ``GPTConfig``)."""

    batch_size: int = field(default=12, metadata={"help": "sequences per step (global batch)"})
    max_iters: int = field(default=2000, metadata={"help": "optimizer steps in total"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=1e-4, metadata={"help": "learning rate at the end of decay"})
    warmup_iters: int = field(default=100, metadata={"help": "steps of linear warm-up"})
    lr_decay_iters: int = field(
        default=0, metadata={"help": "step where the cosine decay ends (0: max_iters)"}
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decay of the matrices"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "largest gradient norm (0: off)"})
    eval_interval: int = field(default=250, metadata={"help": "steps between evaluations"})
    eval_iters: int = field(default=20, metadata={"help": "batches per split per evaluation"})
    seed: int = field(default=1337, metadata={"help": "seed of weights, batches and dropout"})

    def __post_init__(self) -> None:
        _check_field_types(self)
        positive = ("batch_size", "max_iters", "eval_interval", "eval_iters")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.decay_iters <= self.warmup_iters or self.warmup_iters < 0:
            raise ValueError(
                f"need 0 <= warmup_iters < lr_decay_iters, got warmup_iters={self.warmup_iters}"
                f", lr_decay_iters={self.decay_iters} (lr_decay_iters=0 means max_iters); "
                "lower warmup_iters or raise max_iters"
            )
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")

    @property
    def decay_iters(self) -> int:
        """The step where the cosine decay ends."""
        return self.lr_decay_iters or self.max_iters


@dataclass
class TrainState:
    """What changes during a run and must be saved to resume it.

    Attributes:
        step: optimizer steps completed (the next step to run).
        generator: the random generator that draws the training batches.
        losses: the training loss of every step so far.
        evals: one dict per evaluation: step, train, val, lr, tokens_per_s.
    """

    step: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(cls, seed: int) -> TrainState:
        """A fresh state whose batch generator is seeded with ``seed``."""
        return cls(generator=torch.Generator().manual_seed(seed))

    def to_dict(self) -> dict[str, Any]:
        """The state as plain values and tensors, for a checkpoint."""
        return {
            "generator": self.generator.get_state(),
            "losses": list(self.losses),
            "evals": [dict(e) for e in self.evals],
        }

    @classmethod
    def from_checkpoint(cls, payload: Mapping[str, Any]) -> TrainState:
        """Rebuild the state saved in a checkpoint by :func:`fit`."""
        saved = payload["train_state"]
        generator = torch.Generator()
        generator.set_state(saved["generator"])
        return cls(
            step=int(payload["step"]),
            generator=generator,
            losses=list(saved["losses"]),
            evals=[dict(e) for e in saved["evals"]],
        )


def _all_reduce_mean(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """Average a tensor over the processes of a distributed run."""
    if world_size > 1:
        torch.distributed.all_reduce(values)
        values /= world_size
    return values


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Mapping[str, torch.Tensor],
    config: TrainConfig,
    seq: int,
    *,
    state: TrainState | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rank: int = 0,
    world_size: int = 1,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    progress: bool = True,
) -> TrainState:
    """Train ``model`` from ``state.step`` to ``config.max_iters``; return the final state.

    Every ``config.eval_interval`` steps, at the first step and at the last, the train and
    validation losses are estimated (:func:`estimate_loss` on the same fixed batches each
    time), ``on_eval`` receives one record (step, train, val, lr, tokens_per_s) and then
    ``on_checkpoint`` receives the state (except at the step the run started from).

    With several processes the model must be wrapped in DistributedDataParallel: all draw the
    same global batch of ``config.batch_size`` rows and each trains on its share, so the run
    follows the same loss curve as one process with the whole batch.

    Args:
        model: maps ids (batch, seq) to logits (batch, seq, vocab); possibly wrapped in DDP or
            compiled.
        optimizer: the optimizer (see :func:`make_optimizer`).
        data: the token streams ``{"train": ..., "val": ...}`` (CPU tensors).
        config: the loop settings.
        seq: tokens per training window (the model's context length).
        state: where to start; a fresh state seeded from ``config.seed`` when ``None``.
        amp_dtype, scaler: mixed precision on CUDA (see :func:`train_step`).
        rank, world_size: this process's place in a distributed run.
        on_eval, on_checkpoint: callbacks (see above).
        progress: show a progress bar (only the first process shows one).
    """
    from tqdm.auto import tqdm

    if "train" not in data or "val" not in data:
        raise ValueError(f"data needs 'train' and 'val' token streams, got {sorted(data)}")
    state = state if state is not None else TrainState.start(config.seed)
    raw = _unwrap(model)
    device = next(raw.parameters()).device
    tokens_per_step = config.batch_size * seq
    first_step = state.step

    def evaluate(step: int, tokens_per_s: float) -> None:
        # The same evaluation batches every time, independent of the training batches.
        generator = torch.Generator().manual_seed(config.seed + 1)
        losses = estimate_loss(
            raw,
            data,
            config.eval_iters,
            config.batch_size,
            seq,
            generator,
            device=device,
            amp_dtype=amp_dtype,
        )
        record = {
            "step": step,
            "train": losses["train"],
            "val": losses["val"],
            "lr": lr_at(
                min(step, config.max_iters - 1),
                config.lr,
                config.min_lr,
                config.warmup_iters,
                config.decay_iters,
            ),
            "tokens_per_s": tokens_per_s,
        }
        state.evals.append(record)
        if on_eval is not None:
            on_eval(record)
        if on_checkpoint is not None and step != first_step:
            on_checkpoint(state)

    bar = tqdm(
        total=config.max_iters,
        initial=state.step,
        disable=not progress or rank != 0,
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    pending: list[torch.Tensor] = []  # losses not yet read back from the device
    window_start, window_steps = time.perf_counter(), 0
    model.train()
    try:
        if state.step == 0 or not state.evals or state.evals[-1]["step"] != state.step:
            evaluate(state.step, 0.0)
        while state.step < config.max_iters:
            # Set this step's learning rate, draw the batch, step.
            lr = lr_at(
                state.step, config.lr, config.min_lr, config.warmup_iters, config.decay_iters
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(
                data["train"],
                config.batch_size,
                seq,
                state.generator,
                device=device,
                rank=rank,
                world_size=world_size,
            )
            pending.append(
                train_step(
                    model,
                    optimizer,
                    x,
                    y,
                    config.grad_clip or None,
                    amp_dtype=amp_dtype,
                    scaler=scaler,
                )
            )
            state.step += 1
            window_steps += 1
            bar.update(1)

            # At an evaluation: read the losses back (averaged over processes), log, save.
            last = state.step == config.max_iters
            if state.step % config.eval_interval == 0 or last:
                losses = _all_reduce_mean(torch.stack(pending).float(), world_size)
                state.losses += losses.tolist()
                pending.clear()
                elapsed = time.perf_counter() - window_start
                bar.set_postfix(loss=f"{state.losses[-1]:.3f}")
                evaluate(state.step, window_steps * tokens_per_step / elapsed)
                window_start, window_steps = time.perf_counter(), 0
    finally:
        bar.close()
    return state
