"""Tests of `course train` and `course generate`, run in-process on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from course_lib.cli import build_parser, main
from course_lib.cli_train import PRESETS, load_model
from course_lib.training import load_checkpoint

# A model and a run small enough for a test: a few seconds on one CPU thread.
TINY = [
    "--corpus-chars", "60000", "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
    "--max-seq", "16", "--batch-size", "4", "--max-iters", "10", "--warmup-iters", "2",
    "--eval-interval", "5", "--eval-iters", "2", "--no-progress",
]  # fmt: skip


def train(*extra: str) -> int:
    return main(["train", *TINY, *extra])


def only_run(folder: Path) -> Path:
    runs = list(folder.iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_train_with_defaults_writes_a_checkpoint_that_generate_samples(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert train() == 0
    run = only_run(tmp_path / "runs")
    assert run.name.startswith("cpu-char-")
    assert {p.name for p in run.iterdir()} == {"ckpt.pt", "config.json", "tokenizer.json"}
    log = capsys.readouterr().out
    assert "step  0/10 | train" in log and "step 10/10" in log and "tok/s" in log

    # The checkpoint holds the whole run: settings, tokenizer, history.
    payload = load_checkpoint(run / "ckpt.pt", restore_rng=False)
    assert payload["step"] == 10 and payload["model_config"]["n_layers"] == 1
    assert len(payload["train_state"]["losses"]) == 10
    assert [e["step"] for e in payload["train_state"]["evals"]] == [0, 5, 10]
    config = json.loads((run / "config.json").read_text())
    assert config["train_config"]["max_iters"] == 10 and config["run"]["tokenizer"] == "char"

    # Sampling: seeded, so the same seed gives the same text.
    args = ["generate", str(run / "ckpt.pt"), "--max-new-tokens", "40", "--prompt", "KING"]
    assert main([*args, "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "1"]) == 0
    assert capsys.readouterr().out == first
    assert main([*args, "--seed", "2", "--top-k", "5", "--temperature", "1.2"]) == 0
    assert capsys.readouterr().out != first
    assert first.startswith("KING") and len(first.rstrip("\n")) == 44


def test_generate_accepts_a_run_folder_and_several_samples(tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--out", str(out)) == 0
    capsys.readouterr()
    assert (
        main(
            ["generate", str(out), "--num-samples", "2", "--max-new-tokens", "5", "--top-p", "0.9"]
        )
        == 0
    )
    assert capsys.readouterr().out.count("-" * 40) == 1
    model, tokenizer = load_model(out)
    assert not model.training and model.config.vocab == tokenizer.vocab_size


def test_an_existing_run_folder_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert train("--out", str(out)) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert train("--out", str(out), "--overwrite") == 0
    assert not (out / "keep.txt").exists() and (out / "ckpt.pt").is_file()


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    common = ["--lr-decay-iters", "20", "--set", "dropout=0.1"]
    assert train("--out", str(tmp_path / "straight"), "--max-iters", "20", *common) == 0
    assert train("--out", str(tmp_path / "split"), "--max-iters", "10", *common) == 0
    assert (
        main(["train", "--resume", str(tmp_path / "split"), "--max-iters", "20", "--no-progress"])
        == 0
    )
    straight = load_checkpoint(tmp_path / "straight" / "ckpt.pt", restore_rng=False)
    resumed = load_checkpoint(tmp_path / "split" / "ckpt.pt", restore_rng=False)
    assert resumed["step"] == 20
    assert resumed["train_state"]["losses"] == straight["train_state"]["losses"]
    assert (
        resumed["train_state"]["evals"][-1]["val"] == straight["train_state"]["evals"][-1]["val"]
    )
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_resume_refuses_to_change_the_model(tmp_path, capsys):
    assert train("--out", str(tmp_path / "run")) == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "--n-layers", "2"]) == 2
    assert "cannot change ['n_layers']" in capsys.readouterr().err


def test_bpe_tokens(tmp_path):
    out = tmp_path / "bpe"
    assert train("--out", str(out), "--tokenizer", "bpe", "--bpe-vocab", "300") == 0
    payload = load_checkpoint(out / "ckpt.pt", restore_rng=False)
    assert payload["tokenizer"]["kind"] == "bpe"
    assert payload["model_config"]["vocab"] == 300
    model, tokenizer = load_model(out)
    assert tokenizer.vocab_size == 300


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "n_layer=2"], "--set expects NAME=VALUE"),
        (["--set", "n_layers"], "--set expects NAME=VALUE"),
        (["--n-layers", "two"], "setting n_layers: expected int, got 'two'"),
        (["--set", "tie_weights=maybe"], "setting tie_weights: expected bool"),
        (["--n-heads", "5"], "divisible by n_heads=5"),
        (["--dtype", "bfloat16", "--device", "cpu"], "--dtype bfloat16 needs CUDA"),
    ],
    ids=["unknown setting", "no value", "not an int", "not a bool", "bad shape", "amp on cpu"],
)
def test_bad_settings_are_clear_errors(tmp_path, capsys, argv, message):
    assert train("--out", str(tmp_path / "run"), *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "a failed start must not leave a run folder"


def test_explicit_flags_win_over_set_and_presets_have_their_sizes():
    from course_lib.cli_train import apply_overrides, collect_overrides

    args = build_parser().parse_args(
        ["train", "--set", "n_layers=3", "--n-layers", "2", "--set", "d_ff=none", "--lr", "3e-4"]
    )
    assert args.preset == "cpu" and args.tokenizer == "char" and args.device == "auto"
    overrides = collect_overrides(args)
    assert overrides == {"n_layers": 2, "d_ff": None, "lr": 3e-4}
    model, train_cfg = apply_overrides(PRESETS["cpu"].model, PRESETS["cpu"].train, overrides)
    assert model.n_layers == 2 and train_cfg.lr == 3e-4

    gpu = PRESETS["gpu"]
    shape = (gpu.model.n_layers, gpu.model.n_heads, gpu.model.d_model, gpu.model.max_seq)
    assert shape == (6, 6, 384, 256) and gpu.model.dropout == 0.2
    assert (gpu.train.batch_size, gpu.train.max_iters) == (64, 5000)
    cpu = PRESETS["cpu"]
    shape = (cpu.model.n_layers, cpu.model.n_heads, cpu.model.d_model, cpu.model.max_seq)
    assert shape == (4, 4, 128, 64) and cpu.model.dropout == 0.0
    assert (cpu.train.batch_size, cpu.train.max_iters) == (12, 2000)
