"""`course train` under torchrun: two CPU processes (gloo) follow the one-process loss curve.

Both runs use the same global batch: with two processes each trains on half of it and
DistributedDataParallel averages the gradients, so the optimizer takes the same steps and only
the order of floating-point additions differs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from course_lib.cli import main
from course_lib.training import load_checkpoint

SETTINGS = [
    "train", "--corpus-chars", "60000", "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
    "--max-seq", "16", "--batch-size", "8", "--max-iters", "12", "--warmup-iters", "2",
    "--eval-interval", "6", "--eval-iters", "2", "--no-progress", "--device", "cpu",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no gloo backend",
)


def test_two_processes_follow_the_loss_curve_of_one(tmp_path):
    # Two processes on this machine only (--standalone rendezvous on localhost).
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "course_lib.cli", *SETTINGS, "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "x2 processes" in result.stdout
    assert result.stdout.count("step 12/12") == 1, "only the first process should log"

    # The same run in one process.
    assert main([*SETTINGS, "--out", str(tmp_path / "one")]) == 0

    two = load_checkpoint(tmp_path / "ddp" / "ckpt.pt", restore_rng=False)
    one = load_checkpoint(tmp_path / "one" / "ckpt.pt", restore_rng=False)
    losses_two = torch.tensor(two["train_state"]["losses"])
    losses_one = torch.tensor(one["train_state"]["losses"])
    assert len(losses_two) == len(losses_one) == 12
    assert losses_one[-1] < losses_one[0] - 0.1, "the run should learn something"
    torch.testing.assert_close(losses_two, losses_one, atol=2e-4, rtol=0)
    val_two = [e["val"] for e in two["train_state"]["evals"]]
    val_one = [e["val"] for e in one["train_state"]["evals"]]
    torch.testing.assert_close(torch.tensor(val_two), torch.tensor(val_one), atol=2e-4, rtol=0)
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, atol=1e-4, rtol=1e-3)
