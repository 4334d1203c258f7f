"""Benchmark of BPE encoding throughput on the validation plays.

OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_encode.py
"""

import argparse
import platform
import time

from course_lib.corpus import load_corpus
from course_lib.tokenizers import BPETokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1024)
    args = parser.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}")

    # Train on the training plays, then encode the validation plays with a cold cache.
    tokenizer = BPETokenizer.train(load_corpus("train"), args.vocab)
    text = load_corpus("val")
    start = time.perf_counter()
    ids = tokenizer.encode(text)
    seconds = time.perf_counter() - start
    print(f"vocab {tokenizer.vocab_size}, validation text {len(text):,} chars -> {len(ids):,} ids")
    print(f"encode: {seconds:.2f} s, {len(text) / seconds:,.0f} chars/s (cold chunk cache)")
    print(f"characters per token: {len(text) / len(ids):.2f}")

    # A second pass, with every chunk already cached.
    start = time.perf_counter()
    again = tokenizer.encode(text)
    seconds = time.perf_counter() - start
    assert again == ids
    print(f"encode again: {len(text) / seconds:,.0f} chars/s (warm chunk cache)")

    # Decoding, for comparison.
    start = time.perf_counter()
    assert tokenizer.decode(ids) == text
    print(f"decode: {len(text) / (time.perf_counter() - start):,.0f} chars/s")


if __name__ == "__main__":
    main()
