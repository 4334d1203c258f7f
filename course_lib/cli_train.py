"""``course train`` and ``course generate``: train a GPT on the course corpus, then sample it.

``course train`` builds the tokenizer (characters or byte-level BPE) from the training plays,
trains a :class:`course_lib.gpt.GPT` with the loop of :mod:`course_lib.training`, and writes a
run folder::

    runs/<preset>-<tokenizer>-<date>-<time>/
        ckpt.pt         model, optimizer, step, random state, tokenizer, settings, history
        config.json     the settings of the run, readable
        tokenizer.json  the tokenizer, readable by CharTokenizer.load / BPETokenizer.load

The checkpoint is rewritten (atomically) at every evaluation, so ``--resume`` continues an
interrupted run exactly where its last checkpoint stopped. ``course generate ckpt.pt`` samples
text from a checkpoint.

Under ``torchrun --nproc_per_node=N`` the same command trains with DistributedDataParallel
(NCCL on CUDA, gloo on the CPU); ``--batch-size`` is then the global batch, split evenly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from course_lib.device import pick_device
from course_lib.gpt import GPT, GPTConfig, count_parameters
from course_lib.tokenizers import BPETokenizer, CharTokenizer
from course_lib.training import (
    TrainConfig,
    TrainState,
    fit,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
)

__all__ = ["PRESETS", "Preset", "add_parser", "build_tokenizer", "load_model", "prepare_data"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "ckpt.pt"


@dataclass(frozen=True)
class Preset:
    """A named starting point for ``course train``; every field can be overridden.

    ``model.vocab`` is a placeholder: the tokenizer sets the real vocabulary size.
    """

    model: GPTConfig
    train: TrainConfig
    description: str


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        model=GPTConfig(vocab=1, max_seq=64, d_model=128, n_heads=4, n_layers=4, dropout=0.0),
        train=TrainConfig(
            batch_size=12,
            max_iters=2000,
            lr=1e-3,
            min_lr=1e-4,
            warmup_iters=100,
            eval_interval=250,
            eval_iters=20,
        ),
        description="0.8M parameters, minutes on a laptop CPU (validation loss ~1.88)",
    ),
    "gpu": Preset(
        model=GPTConfig(vocab=1, max_seq=256, d_model=384, n_heads=6, n_layers=6, dropout=0.2),
        train=TrainConfig(
            batch_size=64,
            max_iters=5000,
            lr=1e-3,
            min_lr=1e-4,
            warmup_iters=100,
            eval_interval=250,
            eval_iters=200,
        ),
        description="10.8M parameters, a few minutes on one modern GPU",
    ),
}

# Settings that are not model or loop settings but belong to the run.
TOKENIZERS = ("char", "bpe")
DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


# ----------------------------------------------------------------------------------------------
# Settings from the command line
# ----------------------------------------------------------------------------------------------


def _field_type(f: dataclasses.Field) -> str:
    """The type of a config field as a short name: int, float, bool or 'int|None'."""
    return str(f.type).replace(" ", "").replace("Optional[int]", "int|None")


def _parse_value(f: dataclasses.Field, text: str) -> Any:
    """Parse ``text`` as a value of the config field ``f``; raise ValueError naming the field."""
    kind = _field_type(f)
    try:
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind == "int|None":
            return None if text.strip().lower() in ("none", "") else int(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"setting {f.name}: expected {kind}, got {text!r}") from None
    raise TypeError(f"setting {f.name} has an unsupported type {kind}")


def _settable_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every setting the command line may change: name -> ('model' or 'train', field)."""
    found = {f.name: ("model", f) for f in fields(GPTConfig) if f.name != "vocab"}
    found.update({f.name: ("train", f) for f in fields(TrainConfig)})
    return found


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, from ``--set k=v`` and the explicit flags.

    An explicit flag wins over ``--set`` for the same setting.
    """
    settable = _settable_fields()
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in settable:
            raise ValueError(
                f"--set expects NAME=VALUE with NAME one of {sorted(settable)}, got {item!r}"
            )
        overrides[name] = _parse_value(settable[name][1], text)
    for name, (_, f) in settable.items():
        value = getattr(args, f"opt_{name}", None)
        if value is not None:
            overrides[name] = _parse_value(f, value)
    return overrides


def apply_overrides(
    model: GPTConfig, train: TrainConfig, overrides: dict[str, Any]
) -> tuple[GPTConfig, TrainConfig]:
    """Return the configs with ``overrides`` (setting name -> value) applied."""
    settable = _settable_fields()
    model_changes = {k: v for k, v in overrides.items() if settable[k][0] == "model"}
    train_changes = {k: v for k, v in overrides.items() if settable[k][0] == "train"}
    return dataclasses.replace(model, **model_changes), dataclasses.replace(train, **train_changes)


# ----------------------------------------------------------------------------------------------
# Data and tokenizers
# ----------------------------------------------------------------------------------------------


def _corpus(corpus_chars: int) -> tuple[str, str]:
    """The training and validation text; the start of each when ``corpus_chars`` > 0."""
    from course_lib.corpus import load_corpus, quick_slice

    if corpus_chars <= 0:
        return load_corpus("train"), load_corpus("val")
    return quick_slice(corpus_chars, "train"), quick_slice(max(corpus_chars // 9, 1000), "val")


def build_tokenizer(kind: str, text: str, bpe_vocab: int = 1024) -> CharTokenizer | BPETokenizer:
    """Build a character tokenizer from ``text``, or train a byte-level BPE on it."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BPETokenizer.train(text, bpe_vocab)
    raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {kind!r}")


def tokenizer_to_dict(tokenizer: CharTokenizer | BPETokenizer) -> dict[str, Any]:
    """The tokenizer as plain values, to store inside a checkpoint."""
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "chars": list(tokenizer.chars)}
    return {
        "kind": "bpe",
        "merges": [list(p) for p in tokenizer.merges],
        "special_tokens": list(tokenizer.special_tokens),
        "pattern": tokenizer.pattern,
    }


def tokenizer_from_dict(payload: dict[str, Any]) -> CharTokenizer | BPETokenizer:
    """Rebuild a tokenizer stored by :func:`tokenizer_to_dict`."""
    if payload.get("kind") == "char":
        return CharTokenizer(payload["chars"])
    if payload.get("kind") == "bpe":
        merges = [tuple(p) for p in payload["merges"]]
        return BPETokenizer(merges, payload["special_tokens"], payload["pattern"])
    raise ValueError(f"unknown tokenizer kind {payload.get('kind')!r} in the checkpoint")


def prepare_data(
    tokenizer_kind: str, corpus_chars: int = 0, bpe_vocab: int = 1024, tokenizer=None
) -> tuple[CharTokenizer | BPETokenizer, dict[str, torch.Tensor]]:
    """Tokenize the corpus; return the tokenizer and ``{"train": ids, "val": ids}``.

    The character vocabulary is built from both splits (the validation plays use no character
    the training plays lack, but a slice might); BPE is trained on the training text only.
    A given ``tokenizer`` (from a checkpoint) is used as it is.
    """
    train_text, val_text = _corpus(corpus_chars)
    if tokenizer is None:
        source = train_text + val_text if tokenizer_kind == "char" else train_text
        tokenizer = build_tokenizer(tokenizer_kind, source, bpe_vocab)
    data = {
        "train": torch.tensor(tokenizer.encode(train_text), dtype=torch.long),
        "val": torch.tensor(tokenizer.encode(val_text), dtype=torch.long),
    }
    return tokenizer, data


# ----------------------------------------------------------------------------------------------
# Devices and processes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """This process's place in a run: one process, or one of several under torchrun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_processes(device_arg: str) -> tuple[Processes, torch.device]:
    """Join the process group when started by torchrun; choose this process's device."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Processes(), pick_device(None if device_arg == "auto" else device_arg)

    procs = Processes(
        int(os.environ["RANK"]),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ["WORLD_SIZE"]),
    )
    device = pick_device(None if device_arg == "auto" else device_arg)
    if device.type == "cuda":
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise RuntimeError("distributed training on Apple MPS is not supported; use one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return procs, device


def _amp_dtype(device: torch.device, name: str) -> torch.dtype | None:
    """The mixed-precision dtype: bfloat16 (or float16) on CUDA, none elsewhere."""
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {name!r}")
    if device.type != "cuda":
        if name not in ("auto", "float32"):
            raise ValueError(f"--dtype {name} needs CUDA; {device.type} trains in float32")
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DTYPES[name]


# ----------------------------------------------------------------------------------------------
# course train
# ----------------------------------------------------------------------------------------------


def _default_out(preset: str, tokenizer: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{preset}-{tokenizer}-{stamp}"


def _prepare_out(out: Path, overwrite: bool, procs: Processes) -> None:
    """Create the run folder; refuse to reuse one that exists unless asked."""
    if out.exists() and not overwrite:
        raise ValueError(
            f"the run folder {out} exists; choose another with --out, continue it with "
            f"--resume {out}, or replace it with --overwrite"
        )
    _barrier(procs)
    if procs.main:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    _barrier(procs)


def _barrier(procs: Processes) -> None:
    if procs.world_size > 1:
        torch.distributed.barrier()


def _log_line(record: dict[str, float], max_iters: int) -> str:
    """One compact line per evaluation."""
    speed = f"{record['tokens_per_s']:>9,.0f} tok/s" if record["tokens_per_s"] else " " * 15
    return (
        f"step {record['step']:>{len(str(max_iters))}}/{max_iters} | train {record['train']:.4f}"
        f" | val {record['val']:.4f} | lr {record['lr']:.2e} | {speed}"
    )


def run_train(args: argparse.Namespace) -> int:
    """Train a GPT as the command line says; return the exit status."""
    from tqdm.auto import tqdm

    overrides = collect_overrides(args)
    procs, device = _start_processes(args.device)
    try:
        amp_dtype = _amp_dtype(device, args.dtype)

        # Settings, tokenizer and data: from the preset, or from the checkpoint to resume.
        resume_payload = None
        if args.resume is not None:
            if args.out is not None:
                raise ValueError("--resume continues in the run's own folder; drop --out")
            ckpt = args.resume / CHECKPOINT_NAME if args.resume.is_dir() else args.resume
            resume_payload = load_checkpoint(ckpt, restore_rng=False)
            model_cfg = GPTConfig.from_dict(resume_payload["model_config"])
            train_cfg = TrainConfig(**resume_payload["train_config"])
            run = resume_payload["run"]
            changed = sorted(k for k in overrides if _settable_fields()[k][0] == "model")
            if changed:
                raise ValueError(f"--resume keeps the model's shape; cannot change {changed}")
            model_cfg, train_cfg = apply_overrides(model_cfg, train_cfg, overrides)
            out = ckpt.parent
            tokenizer, data = prepare_data(
                run["tokenizer"],
                run["corpus_chars"],
                tokenizer=tokenizer_from_dict(resume_payload["tokenizer"]),
            )
        else:
            preset = PRESETS[args.preset]
            model_cfg, train_cfg = apply_overrides(preset.model, preset.train, overrides)
            run = {
                "preset": args.preset,
                "tokenizer": args.tokenizer,
                "corpus_chars": args.corpus_chars,
                "bpe_vocab": args.bpe_vocab,
            }
            out = args.out if args.out is not None else _default_out(args.preset, args.tokenizer)
            _prepare_out(out, args.overwrite, procs)
            tokenizer, data = prepare_data(args.tokenizer, args.corpus_chars, args.bpe_vocab)
            model_cfg = dataclasses.replace(model_cfg, vocab=tokenizer.vocab_size)

        # The model: the same initial weights in every process.
        torch.manual_seed(train_cfg.seed)
        model = GPT(model_cfg).to(device)
        optimizer = make_optimizer(
            model, train_cfg.lr, train_cfg.weight_decay, (train_cfg.beta1, train_cfg.beta2)
        )
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        if resume_payload is not None:
            load_checkpoint(ckpt, model, optimizer, restore_rng=procs.main)
            state = TrainState.from_checkpoint(resume_payload)
            if scaler is not None and resume_payload.get("scaler"):
                scaler.load_state_dict(resume_payload["scaler"])
            if not procs.main:
                torch.manual_seed(train_cfg.seed + 1000 * procs.rank + state.step)
        else:
            state = TrainState.start(train_cfg.seed)
            # Dropout differs between processes; the batches are shared (see fit).
            torch.manual_seed(train_cfg.seed + procs.rank)

        # Wrappers: DistributedDataParallel across processes, torch.compile on CUDA.
        trained: torch.nn.Module = model
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if args.compile:
            if device.type == "cuda":
                trained = torch.compile(trained)
            elif procs.main:
                logger.info("torch.compile is used on CUDA only; training %s eagerly", device)
        if procs.world_size > 1:
            ids = [procs.local_rank] if device.type == "cuda" else None
            trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=ids)

        # Save the settings, then train.
        settings = {
            "model_config": asdict(model_cfg),
            "train_config": asdict(train_cfg),
            "run": run,
            "tokenizer": tokenizer_to_dict(tokenizer),
        }
        if procs.main:
            (out / "config.json").write_text(
                json.dumps(
                    {k: v for k, v in settings.items() if k != "tokenizer"}
                    | {
                        "device": str(device),
                        "amp_dtype": str(amp_dtype),
                        "world_size": procs.world_size,
                    },
                    indent=1,
                )
            )
            tokenizer.save(out / "tokenizer.json", overwrite=True)
            print(
                f"{'resuming' if resume_payload else 'training'} a GPT of "
                f"{count_parameters(model):,} parameters on {device}"
                f"{f' x{procs.world_size} processes' if procs.world_size > 1 else ''}"
                f" ({len(data['train']):,} training tokens, vocab {model_cfg.vocab}) -> {out}",
                flush=True,
            )

        def on_eval(record: dict[str, float]) -> None:
            if procs.main and not args.quiet:
                tqdm.write(_log_line(record, train_cfg.max_iters), file=sys.stdout)

        def on_checkpoint(current: TrainState) -> None:
            if procs.main:
                save_checkpoint(
                    out / CHECKPOINT_NAME,
                    model,
                    optimizer,
                    current.step,
                    train_state=current.to_dict(),
                    scaler=scaler.state_dict() if scaler else None,
                    **settings,
                )
            _barrier(procs)

        started = time.perf_counter()
        try:
            state = fit(
                trained,
                optimizer,
                data,
                train_cfg,
                model_cfg.max_seq,
                state=state,
                amp_dtype=amp_dtype,
                scaler=scaler,
                rank=procs.rank,
                world_size=procs.world_size,
                on_eval=on_eval,
                on_checkpoint=on_checkpoint,
                progress=not args.no_progress,
            )
        except KeyboardInterrupt:
            if procs.main:
                saved = (out / CHECKPOINT_NAME).is_file()
                hint = (
                    f"continue with: course train --resume {out}" if saved else "no checkpoint yet"
                )
                print(f"interrupted; {hint}", file=sys.stderr)
            return 130
        if procs.main:
            final = state.evals[-1]
            print(
                f"done in {time.perf_counter() - started:.0f} s: val loss {final['val']:.4f} at "
                f"step {final['step']}; sample with: course generate {out / CHECKPOINT_NAME}"
            )
    finally:
        if procs.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


# ----------------------------------------------------------------------------------------------
# course generate
# ----------------------------------------------------------------------------------------------


def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[GPT, CharTokenizer | BPETokenizer]:
    """Load the GPT and tokenizer of a ``course train`` checkpoint, ready for sampling."""
    path = Path(path)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    payload = load_checkpoint(path, restore_rng=False)
    if "model_config" not in payload or "tokenizer" not in payload:
        raise ValueError(f"{path} was not written by `course train` (no model settings)")
    model = GPT(GPTConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), tokenizer_from_dict(payload["tokenizer"])


def run_generate(args: argparse.Namespace) -> int:
    """Sample text from a checkpoint as the command line says; return the exit status."""
    device = pick_device(None if args.device == "auto" else args.device)
    model, tokenizer = load_model(args.checkpoint, device)
    prompt = args.prompt.encode().decode("unicode_escape") if args.escapes else args.prompt
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt must hold at least one token")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    context = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)
    out = model.generate(
        context, args.max_new_tokens, args.temperature, args.top_k, args.top_p, generator
    )
    for i, row in enumerate(out.tolist()):
        if i:
            print("-" * 40)
        print(tokenizer.decode(row))
    return 0


# ----------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    presets = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())
    parser = subparsers.add_parser(
        "train",
        help="train a GPT on the course corpus",
        description=(
            "Train a GPT on the training plays and evaluate it on the validation plays. "
            f"Presets: {presets}. Any setting can be changed with --set NAME=VALUE or its "
            "own flag. Under torchrun, trains on every process with DistributedDataParallel."
        ),
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="starting settings (default: cpu)"
    )
    parser.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default="char",
        help="characters or byte-level BPE tokens (default: char)",
    )
    parser.add_argument(
        "--bpe-vocab",
        type=int,
        default=1024,
        help="vocabulary size of the BPE tokenizer (default: 1024)",
    )
    parser.add_argument(
        "--corpus-chars",
        type=int,
        default=0,
        help="train on the first N characters only (0: the whole corpus)",
    )
    parser.add_argument(
        "--out", type=Path, help="run folder (default: runs/<preset>-<tokenizer>-<date>-<time>)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run folder if it exists"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue the run in this folder (or from this checkpoint)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=sorted(DTYPES),
        help="mixed precision on CUDA (auto: bfloat16 where supported)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="no log line per evaluation")
    parser.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="change a model or training setting, e.g. --set n_layers=2",
    )

    # One flag per setting, e.g. --n-layers, --max-iters.
    group = parser.add_argument_group("settings (override the preset)")
    for name, (_, f) in _settable_fields().items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"opt_{name}",
            metavar="V",
            help=f"{f.metadata.get('help', name)} ({_field_type(f)})",
        )
    parser.set_defaults(run=run_train)


def _add_generate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample text from a checkpoint of `course train`",
        description="Sample text from a checkpoint written by `course train`.",
    )
    parser.add_argument("checkpoint", type=Path, help="a ckpt.pt file or its run folder")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument(
        "--escapes", action="store_true", help=r"read backslash escapes such as \n in the prompt"
    )
    parser.add_argument("--max-new-tokens", type=int, default=500, help="tokens to add")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="below 1 sharper, above 1 flatter, 0 greedy (default: 0.8)",
    )
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    parser.add_argument(
        "--top-p",
        type=float,
        help="sample among the smallest set of tokens whose probability adds up to p",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples to draw")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.set_defaults(run=run_generate)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``course train`` and ``course generate``."""
    _add_train_parser(subparsers)
    _add_generate_parser(subparsers)
