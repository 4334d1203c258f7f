"""Choosing where tensors live, and making runs repeatable.

The course runs on a laptop CPU and uses a GPU when one is there. Nothing in
``course_lib`` captures a device at import time: modules follow the device of their
parameters and inputs, and code that needs a device asks :func:`pick_device`.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

__all__ = ["DEVICE_ENV", "pick_device", "seed_everything"]

logger = logging.getLogger(__name__)

# Environment variable that overrides the automatic choice, e.g. COURSE_DEVICE=cpu.
DEVICE_ENV = "COURSE_DEVICE"

_KNOWN = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on: CUDA, then Apple MPS, then the CPU.

    Args:
        preferred: ``"auto"`` or ``None`` for the automatic choice, or a device such as
            ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``. When ``None``, the
            ``COURSE_DEVICE`` environment variable is read first.

    Raises:
        ValueError: for a device name that is not one of cpu, cuda[:N], mps or auto.
        RuntimeError: when the requested device is not available on this machine.
    """
    if preferred is None:
        preferred = os.environ.get(DEVICE_ENV) or "auto"
    if isinstance(preferred, torch.device):
        preferred = str(preferred)
    if not isinstance(preferred, str):
        raise TypeError(f"device must be a string or torch.device, got {preferred!r}")

    choice = preferred.strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")

    kind = choice.split(":", 1)[0]
    if kind not in _KNOWN:
        raise ValueError(f"unknown device {preferred!r}: expected auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preferred!r} was asked for, but CUDA is not available here")
    if kind == "mps" and not _mps_available():
        raise RuntimeError(f"device {preferred!r} was asked for, but Apple MPS is not available")
    return torch.device(choice)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's random generators; return a CPU generator.

    The returned generator is seeded with ``seed`` too, for code that prefers an explicit
    generator over the global state.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    logger.debug("seeded python, numpy and torch with %d", seed)
    return torch.Generator().manual_seed(seed)
