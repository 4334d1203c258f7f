"""Benchmark of BPE training: the incremental library trainer against the plain recount.

Prints figures; asserts only that both trainers learn identical merges. The race on the slice
is run twice: with the default pre-split pattern (many short chunks) and with
``pattern=None`` (the whole slice is one long chunk).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bpe.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bpe.py --skip-corpus \\
        --slice-chars 40000 --slice-vocab 406
"""

import argparse
import platform
import time

from course_lib.corpus import load_corpus, quick_slice
from course_lib.tokenizers import DEFAULT_PATTERN, train_bpe, train_bpe_simple


def timed(func, *args, **kwargs):
    """Return (result, wall-clock seconds, CPU seconds of this process) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def race(part: str, vocab_size: int, pattern: str | None, label: str) -> None:
    """Train both trainers on ``part`` and print their times, the ratio and the agreement."""
    simple, t_simple, cpu_simple = timed(train_bpe_simple, part, vocab_size, pattern)
    fast, t_fast, cpu_fast = timed(train_bpe, part, vocab_size, pattern)
    print(f"slice of {len(part):,} chars to vocab {vocab_size} ({len(fast)} merges), {label}:")
    print(f"  simple recount trainer: {t_simple:.2f} s (CPU {cpu_simple:.2f} s)")
    print(f"  library trainer:        {t_fast:.3f} s (CPU {cpu_fast:.3f} s)")
    print(f"  speed-up: {t_simple / t_fast:.0f}x (CPU {cpu_simple / cpu_fast:.0f}x)")
    assert simple == fast, f"the trainers learned different merges ({label})"
    print("  merges identical: yes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-vocab", type=int, default=1024, help="vocab for the whole corpus")
    parser.add_argument("--slice-chars", type=int, default=300_000, help="slice for the race")
    parser.add_argument("--slice-vocab", type=int, default=512, help="vocab for the race")
    parser.add_argument("--skip-corpus", action="store_true", help="skip the whole-corpus run")
    args = parser.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}")

    # 1. The library trainer on the whole corpus.
    if not args.skip_corpus:
        text = load_corpus("all")
        merges, seconds, cpu = timed(train_bpe, text, args.full_vocab)
        print(
            f"library trainer, whole corpus ({len(text):,} chars) to vocab {args.full_vocab}: "
            f"{seconds:.2f} s, CPU {cpu:.2f} s ({len(merges)} merges)"
        )

    # 2. Both trainers on the same slice: short chunks, then the slice as one long chunk.
    part = quick_slice(args.slice_chars, split="train")
    race(part, args.slice_vocab, DEFAULT_PATTERN, "default pattern")
    race(part, args.slice_vocab, None, "pattern=None (one chunk)")


if __name__ == "__main__":
    main()
