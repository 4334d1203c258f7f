"""Benchmark of training: the course's GPT against a plain PyTorch GPT of the same shape.

Both models train with the same loop (``course_lib.training.fit``), optimizer, data, seed and
schedule on the reference configuration: 4 layers, 4 heads, width 128, context 64, batch 12,
2,000 steps, no dropout, character tokens, the course corpus (training plays; validation on
the held-out plays). Each model trains in its own process so that its peak memory is its own.

Prints, per model: parameters, milliseconds per step and tokens per second (training steps
only), wall time of the whole run (evaluations included), peak resident memory
(``resource.getrusage``), and the final validation loss (on 20 batches, as logged during
training, and on 200 batches, a steadier figure). Asserts nothing about speed.

    .venv/bin/python benchmarks/bench_train.py              # the reference configuration
    .venv/bin/python benchmarks/bench_train.py --iters 100  # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from course_lib.cli_train import prepare_data
from course_lib.gpt import GPT, GPTConfig, count_parameters
from course_lib.training import TrainConfig, estimate_loss, fit, make_optimizer

MODELS = ("course", "plain")


class PlainBlock(nn.Module):
    """A pre-norm GPT block written the usual compact way: fused QKV, torch's fused kernels."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.up = nn.Linear(d_model, 4 * d_model)
        self.down = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d_model, dim=-1)
        q, k, v = (t.view(batch, seq, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True
        )  # (batch, n_heads, seq, d_head)
        x = x + self.proj(y.transpose(1, 2).reshape(batch, seq, d_model))  # (batch, seq, d_model)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class PlainGPT(nn.Module):
    """The same network as ``course_lib.gpt.GPT``, with the same initialisation."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.tok = nn.Embedding(config.vocab, config.d_model)
        self.pos = nn.Embedding(config.max_seq, config.d_model)
        self.blocks = nn.ModuleList(
            PlainBlock(config.d_model, config.n_heads) for _ in range(config.n_layers)
        )
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab, bias=False)
        self.head.weight = self.tok.weight
        for name, param in self.named_parameters():
            if param.dim() >= 2:
                scaled = name.endswith(("proj.weight", "down.weight"))
                std = 0.02 / math.sqrt(2 * config.n_layers) if scaled else 0.02
                nn.init.normal_(param, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(param)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (batch, seq, vocab)


def run_one(which: str, iters: int, threads: int) -> dict:
    """Train one model in this process; return its figures."""
    torch.set_num_threads(threads)
    _, data = prepare_data("char")
    vocab = int(max(data["train"].max(), data["val"].max())) + 1
    config = GPTConfig(vocab=vocab, max_seq=64, d_model=128, n_heads=4, n_layers=4, dropout=0.0)
    train = TrainConfig(
        batch_size=12,
        max_iters=iters,
        lr=1e-3,
        min_lr=1e-4,
        warmup_iters=min(100, iters // 10),
        eval_interval=250,
        eval_iters=20,
    )
    torch.manual_seed(train.seed)
    model = GPT(config) if which == "course" else PlainGPT(config)
    optimizer = make_optimizer(model, train.lr, train.weight_decay, (train.beta1, train.beta2))

    started = time.perf_counter()
    state = fit(model, optimizer, data, train, config.max_seq, progress=False)
    wall = time.perf_counter() - started

    # Throughput of the training steps alone, weighted by the steps of each window.
    windows = [
        (b["step"] - a["step"], b["tokens_per_s"]) for a, b in zip(state.evals, state.evals[1:])
    ]
    steps = sum(n for n, _ in windows)
    seconds = sum(n * config.max_seq * train.batch_size / speed for n, speed in windows)
    final = estimate_loss(
        model,
        {"val": data["val"]},
        200,
        train.batch_size,
        config.max_seq,
        torch.Generator().manual_seed(0),
    )["val"]
    return {
        "model": which,
        "parameters": count_parameters(model),
        "ms_per_step": 1000 * seconds / steps,
        "tokens_per_s": steps * config.max_seq * train.batch_size / seconds,
        "wall_s": wall,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "val_loss_20": state.evals[-1]["val"],
        "val_loss_200": final,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000, help="training steps per model")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads (default: torch's default)",
    )
    parser.add_argument("--only", choices=MODELS, help="train one model in this process")
    args = parser.parse_args()

    if args.only:
        print(json.dumps(run_one(args.only, args.iters, args.threads)))
        return

    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, {args.threads} torch threads"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    results = []
    for which in MODELS:
        command = [
            sys.executable,
            __file__,
            "--only",
            which,
            "--iters",
            str(args.iters),
            "--threads",
            str(args.threads),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"load average after:  {os.getloadavg()[0]:.2f}")

    print(f"\nreference configuration, {args.iters} steps:")
    print(
        f"{'model':8} {'params':>9} {'ms/step':>8} {'tokens/s':>9} {'wall s':>7} "
        f"{'peak MiB':>9} {'val (20)':>9} {'val (200)':>9}"
    )
    for r in results:
        print(
            f"{r['model']:8} {r['parameters']:>9,} {r['ms_per_step']:>8.1f} "
            f"{r['tokens_per_s']:>9,.0f} {r['wall_s']:>7.1f} {r['peak_mib']:>9.0f} "
            f"{r['val_loss_20']:>9.4f} {r['val_loss_200']:>9.4f}"
        )
    course, plain = results
    print(
        f"\ncourse GPT throughput relative to the plain model: "
        f"{course['tokens_per_s'] / plain['tokens_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
