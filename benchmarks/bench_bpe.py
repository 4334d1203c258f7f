"""Benchmark of BPE training: the incremental library trainer against the plain recount.

Prints figures; asserts only that both trainers learn identical merges.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bpe.py
"""

import argparse
import platform
import time

from course_lib.corpus import load_corpus, quick_slice
from course_lib.tokenizers import DEFAULT_PATTERN, train_bpe, train_bpe_simple


def timed(func, *args, **kwargs):
    """Return (result, seconds) of one call."""
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-vocab", type=int, default=1024, help="vocab for the whole corpus")
    parser.add_argument("--slice-chars", type=int, default=300_000, help="slice for the race")
    parser.add_argument("--slice-vocab", type=int, default=512, help="vocab for the race")
    args = parser.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}")

    # 1. The library trainer on the whole corpus.
    text = load_corpus("all")
    merges, seconds = timed(train_bpe, text, args.full_vocab)
    print(
        f"library trainer, whole corpus ({len(text):,} chars) to vocab {args.full_vocab}: "
        f"{seconds:.2f} s ({len(merges)} merges)"
    )

    # 2. Both trainers on the same slice with the same pattern.
    part = quick_slice(args.slice_chars, split="train")
    simple, t_simple = timed(train_bpe_simple, part, args.slice_vocab, DEFAULT_PATTERN)
    fast, t_fast = timed(train_bpe, part, args.slice_vocab, DEFAULT_PATTERN)
    print(f"slice of {len(part):,} chars to vocab {args.slice_vocab} ({len(fast)} merges):")
    print(f"  simple recount trainer: {t_simple:.2f} s")
    print(f"  library trainer:        {t_fast:.3f} s")
    print(f"  speed-up: {t_simple / t_fast:.0f}x")
    assert simple == fast, "the trainers learned different merges"
    print("  merges identical: yes")


if __name__ == "__main__":
    main()
