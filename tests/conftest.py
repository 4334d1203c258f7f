"""Shared test set-up: a headless plotting backend and one math thread per process."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
