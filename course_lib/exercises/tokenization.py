"""Checks for notebook 01, tokenization.

The reference for every exercise is the plain algorithm of ``course_lib.tokenizers``
without pre-splitting (``pattern=None``): the notebook's tokenizer works on the text
as one sequence of UTF-8 bytes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from course_lib.checks import Case, Mistake, check_function
from course_lib.exercises import Exercise
from course_lib.tokenizers import BPETokenizer, count_pairs, encode_simple, merge, train_bpe_simple

Pair = tuple[int, int]


# ----------------------------------------------------------------------------------------------
# References, in the exact form the notebook asks for
# ----------------------------------------------------------------------------------------------


def ref_char_vocab(text: str) -> list[str]:
    return sorted(set(text))


def ref_count_pairs(ids: list[int]) -> dict[Pair, int]:
    return count_pairs(ids)


def ref_merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    return merge(ids, pair, new_id)


def ref_train_bpe(text: str, vocab_size: int) -> list[Pair]:
    return train_bpe_simple(text, vocab_size, pattern=None)


def ref_encode(text: str, merges: Sequence[Pair]) -> list[int]:
    return encode_simple(text, merges, pattern=None)


def ref_decode(ids: list[int], merges: Sequence[Pair]) -> str:
    return BPETokenizer(merges, pattern=None).decode(ids)


def ref_encode_with_special(
    text: str, merges: Sequence[Pair], special_tokens: Sequence[str]
) -> list[int]:
    return BPETokenizer(merges, special_tokens, pattern=None).encode(text, allowed_special="all")


# ----------------------------------------------------------------------------------------------
# Known mistakes, each a realistic wrong implementation
# ----------------------------------------------------------------------------------------------


def _vocab_first_seen(text):
    return list(dict.fromkeys(text))


def _vocab_of_bytes(text):
    return sorted(set(chr(b) for b in text.encode("utf-8")))


def _vocab_of_words(text):
    return sorted(set("".join(text.split())))


def _pairs_without_overlap(ids):
    counts, i = {}, 0
    while i + 1 < len(ids):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts


def _pairs_missing_last(ids):
    return count_pairs(ids[:-1])


def _pairs_counted_once(ids):
    return {pair: 1 for pair in zip(ids, ids[1:])}


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return list(ids[:i]) + [new_id] + list(ids[i + 2 :])
    return list(ids)


def _merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_overlapping(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif i > 0 and (ids[i - 1], ids[i]) == tuple(pair):
            continue
        else:
            out.append(ids[i])
    return out


def _train_ties_first_seen(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for new_id in range(256, vocab_size):
        counts = count_pairs(ids)
        if not counts:
            break
        best = max(counts, key=counts.get)  # the first pair seen wins a tie
        if counts[best] < 2:
            break
        ids = merge(ids, best, new_id)
        merges.append(best)
    return merges


def _train_one_merge_short(text, vocab_size):
    return train_bpe_simple(text, vocab_size - 1, pattern=None)


def _train_without_recount(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    counts = count_pairs(ids)  # counted once, before any merge
    for new_id in range(256, vocab_size):
        candidates = {p: c for p, c in counts.items() if p not in merges and c >= 2}
        if not candidates:
            break
        best = min(candidates, key=lambda p: (-candidates[p], p))
        ids = merge(ids, best, new_id)
        merges.append(best)
    return merges


def _train_counts_merges(text, vocab_size):
    # Reads vocab_size as the number of merges.
    return train_bpe_simple(text, 256 + vocab_size, pattern=None)


def _train_keeps_single_pairs(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for new_id in range(256, vocab_size):
        counts = count_pairs(ids)
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))  # merges even a pair seen once
        ids = merge(ids, best, new_id)
        merges.append(best)
    return merges


def _encode_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for i in reversed(range(len(merges))):
        ids = merge(ids, merges[i], 256 + i)
    return ids


def _encode_code_points(text, merges):
    ids = [ord(c) for c in text]
    for i, pair in enumerate(merges):
        ids = merge(ids, pair, 256 + i)
    return ids


def _encode_greedy_longest(text, merges):
    # Matches the longest known token at each position instead of replaying the merges.
    table = [bytes([b]) for b in range(256)]
    for a, b in merges:
        table.append(table[a] + table[b])
    lookup = {token: i for i, token in reversed(list(enumerate(table)))}
    data, ids, i = text.encode("utf-8"), [], 0
    while i < len(data):
        j = max(j for j in range(i + 1, len(data) + 1) if data[i:j] in lookup)
        ids.append(lookup[data[i:j]])
        i = j
    return ids


def _encode_one_pass(text, merges):
    # Stops after the first merge that applies.
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        merged = merge(ids, pair, 256 + i)
        if merged != ids:
            return merged
    return ids


def _table(merges):
    table = [bytes([b]) for b in range(256)]
    for a, b in merges:
        table.append(table[a] + table[b])
    return table


def _decode_strict(ids, merges):
    return b"".join(_table(merges)[i] for i in ids).decode("utf-8")


def _decode_each_token(ids, merges):
    table = _table(merges)
    return "".join(table[i].decode("utf-8", errors="replace") for i in ids)


def _decode_ignoring_errors(ids, merges):
    return b"".join(_table(merges)[i] for i in ids).decode("utf-8", errors="ignore")


def _special_split_into_pieces(text, merges, special_tokens):
    return encode_simple(text, merges, pattern=None)


def _special_shortest_first(text, merges, special_tokens):
    tokenizer = BPETokenizer(merges, special_tokens, pattern=None)
    ids, start, i = [], 0, 0
    ordered = sorted(special_tokens, key=len)  # shortest first: a longer token is cut short
    while i < len(text):
        hit = next((s for s in ordered if text.startswith(s, i)), None)
        if hit is None:
            i += 1
            continue
        ids += tokenizer.encode(text[start:i])
        ids.append(tokenizer.special_tokens[hit])
        i = start = i + len(hit)
    return ids + tokenizer.encode(text[start:])


def _special_loses_spaces(text, merges, special_tokens):
    tokenizer = BPETokenizer(merges, special_tokens, pattern=None)
    longest_first = sorted(special_tokens, key=len, reverse=True)
    pieces = re.split("(" + "|".join(map(re.escape, longest_first)) + ")", text)
    ids = []
    for piece in pieces:
        if piece in tokenizer.special_tokens:
            ids.append(tokenizer.special_tokens[piece])
        elif piece.strip():
            ids += tokenizer.encode(piece.strip())  # the spaces around the piece are lost
    return ids


# ----------------------------------------------------------------------------------------------
# Cases seen by the visible checks
# ----------------------------------------------------------------------------------------------

_rng = random.Random(1)
_RANDOM_IDS = [_rng.randrange(6) for _ in range(60)]
_TINY_TEXT = "low lower lowest, newer wider; low low"
_MERGES = train_bpe_simple(_TINY_TEXT * 3, 256 + 12, pattern=None)
_SPECIALS = ["<|endoftext|>", "<|sep|>", "<|sep|><|sep|>"]

EXERCISES: dict[str, Exercise] = {}


def _register(exercise_id: str, symbol: str, mistakes: list[Mistake]) -> list[Mistake]:
    EXERCISES[exercise_id] = Exercise(exercise_id, symbol, tuple(mistakes))
    return mistakes


VOCAB_MISTAKES = _register(
    "char_vocab",
    "char_vocab",
    [
        Mistake(
            "characters in order of first appearance",
            "sort the distinct characters so that the same text always gives the same ids",
            _vocab_first_seen,
        ),
        Mistake(
            "the vocabulary is made of UTF-8 bytes, not characters",
            "iterate over the string itself: a character such as 'é' is two bytes in UTF-8",
            _vocab_of_bytes,
        ),
        Mistake(
            "whitespace characters were dropped",
            "spaces and newlines are characters too; a tokenizer must keep them to round-trip",
            _vocab_of_words,
        ),
    ],
)

COUNT_MISTAKES = _register(
    "count_pairs",
    "count_pairs",
    [
        Mistake(
            "overlapping pairs miscounted",
            "in [5, 5, 5] the pair (5, 5) starts at positions 0 and 1: count every position",
            _pairs_without_overlap,
        ),
        Mistake(
            "the last pair is missed",
            "a list of n ids has n - 1 adjacent pairs: loop over all of them",
            _pairs_missing_last,
        ),
        Mistake(
            "each pair counted only once",
            "add one to the pair's count at every position instead of setting it to 1",
            _pairs_counted_once,
        ),
    ],
)

MERGE_MISTAKES = _register(
    "merge",
    "merge",
    [
        Mistake(
            "only the first occurrence is replaced",
            "keep scanning after a replacement: every occurrence must be merged",
            _merge_first_only,
        ),
        Mistake(
            "the last id is dropped",
            "when the loop stops before the end, append the id that is left over",
            _merge_drops_last,
        ),
        Mistake(
            "overlapping occurrences are both merged",
            "after a replacement skip both ids (i += 2), so [5, 5, 5] becomes [new, 5]",
            _merge_overlapping,
        ),
    ],
)

TRAIN_MISTAKES = _register(
    "train_bpe",
    "train_bpe",
    [
        Mistake(
            "ties broken by first occurrence",
            "among equally frequent pairs choose the smallest pair, e.g. "
            "min(counts, key=lambda p: (-counts[p], p)); max(counts, key=counts.get) picks "
            "whichever pair was seen first",
            _train_ties_first_seen,
        ),
        Mistake(
            "one merge too few",
            "make a merge for every new id from 256 to vocab_size - 1 inclusive: "
            "range(256, vocab_size)",
            _train_one_merge_short,
        ),
        Mistake(
            "pair counts not recomputed after a merge",
            "count the pairs again on the merged ids before choosing each new merge",
            _train_without_recount,
        ),
        Mistake(
            "vocab_size read as the number of merges",
            "vocab_size counts the 256 byte ids too: make vocab_size - 256 merges",
            _train_counts_merges,
        ),
        Mistake(
            "a pair seen only once was merged",
            "stop when the most frequent pair occurs fewer than 2 times",
            _train_keeps_single_pairs,
        ),
    ],
)

ENCODE_MISTAKES = _register(
    "encode",
    "encode",
    [
        Mistake(
            "the longest known token matched greedily",
            "replay the merges in the order they were learned: BPE does not pick the longest "
            "token at each position",
            _encode_greedy_longest,
        ),
        Mistake(
            "merges applied in reverse order",
            "apply the merges in the order they were learned: merge i may use ids made before it",
            _encode_reversed,
        ),
        Mistake(
            "characters encoded by code point instead of UTF-8 bytes",
            "start from list(text.encode('utf-8')); ord(c) is above 255 for many characters",
            _encode_code_points,
        ),
        Mistake(
            "encoding stopped after the first merge that applied",
            "go through every merge, not just the first one that changes the ids",
            _encode_one_pass,
        ),
    ],
)

DECODE_MISTAKES = _register(
    "decode",
    "decode",
    [
        Mistake(
            "decoding raises on invalid UTF-8",
            "decode the bytes with errors='replace' so broken sequences become '\ufffd'",
            _decode_strict,
        ),
        Mistake(
            "each token decoded on its own",
            "join the bytes of all tokens first, then decode once: a character's bytes can be "
            "spread over several tokens",
            _decode_each_token,
        ),
        Mistake(
            "invalid bytes silently dropped",
            "use errors='replace', not 'ignore': a reader should see that something was wrong",
            _decode_ignoring_errors,
        ),
    ],
)

SPECIAL_MISTAKES = _register(
    "encode_with_special",
    "encode_with_special",
    [
        Mistake(
            "special tokens split into pieces",
            "find the special strings first and emit each as its single id; encode only the "
            "text between them",
            _special_split_into_pieces,
        ),
        Mistake(
            "a shorter special token matched inside a longer one",
            "try the longest special strings first, so '<|sep|><|sep|>' is not read as "
            "two '<|sep|>'",
            _special_shortest_first,
        ),
        Mistake(
            "whitespace lost around special tokens",
            "keep the text between special tokens exactly as it is, spaces and newlines included",
            _special_loses_spaces,
        ),
    ],
)


# ----------------------------------------------------------------------------------------------
# The checks the notebook calls
# ----------------------------------------------------------------------------------------------


def _cases(cases, default):
    return [c if isinstance(c, Case) else Case(tuple(c)) for c in (cases or default)]


def check_char_vocab(fn, cases=None) -> None:
    """Check ``char_vocab(text) -> list[str]``: the sorted distinct characters."""
    default = [
        Case(("hello world",), label="a space"),
        Case(("To be,\nor not to be.",), label="newline and punctuation"),
        Case(("naïve café",), label="accented letters"),
        Case(("",), label="empty text"),
    ]
    check_function(
        fn, ref_char_vocab, _cases(cases, default), name="char_vocab", mistakes=VOCAB_MISTAKES
    )


def check_count_pairs(fn, cases=None) -> None:
    """Check ``count_pairs(ids) -> dict``: overlapping counts of adjacent pairs."""
    default = [
        Case(([1, 2, 3, 1, 2],), label="a repeated pair"),
        Case(([5, 5, 5, 5],), label="a run of one id"),
        Case(([7],), label="a single id"),
        Case(([],), label="empty"),
        Case((_RANDOM_IDS,), label="60 random ids"),
    ]
    check_function(
        fn, ref_count_pairs, _cases(cases, default), name="count_pairs", mistakes=COUNT_MISTAKES
    )


def check_merge(fn, cases=None) -> None:
    """Check ``merge(ids, pair, new_id) -> list``: non-overlapping, left to right."""
    default = [
        Case(([1, 2, 3, 1, 2], (1, 2), 256), label="two occurrences"),
        Case(([5, 5, 5], (5, 5), 256), label="overlapping occurrences"),
        Case(([1, 3, 1, 2], (1, 2), 256), label="the pair's first id alone"),
        Case(([1, 2, 3, 4], (3, 4), 300), label="pair at the end"),
        Case(([1, 2, 3], (9, 9), 256), label="pair absent"),
        Case(([], (1, 2), 256), label="empty"),
    ]
    check_function(fn, ref_merge, _cases(cases, default), name="merge", mistakes=MERGE_MISTAKES)


def check_train_bpe(fn, cases=None) -> None:
    """Check ``train_bpe(text, vocab_size) -> list of pairs`` against the plain algorithm."""
    default = [
        Case(("aaabdaaabac", 259), label="the classic example"),
        Case(("abab cdcd abcd", 262), label="equally frequent pairs"),
        Case((_TINY_TEXT, 256 + 10), label="ten merges of English"),
        Case(("héllo héllo", 258), label="non-ASCII text"),
        Case(("abc", 300), label="a text with nothing worth merging"),
        Case(("", 300), label="empty text"),
    ]
    check_function(
        fn,
        ref_train_bpe,
        _cases(cases, default),
        name="train_bpe",
        mistakes=TRAIN_MISTAKES,
        note="train_bpe calls your count_pairs and merge: if either fails, fix it first.",
    )


def check_encode(fn, cases=None) -> None:
    """Check ``encode(text, merges) -> list[int]``."""
    default = [
        Case(("lowest newer", _MERGES), label="words seen in training"),
        Case(("slow flower", _MERGES), label="new words"),
        Case(("café ☕", _MERGES), label="non-ASCII"),
        Case(("cacc", [(99, 99), (97, 99)]), label="the order of the merges decides"),
        Case(("", _MERGES), label="empty"),
    ]
    check_function(
        fn,
        ref_encode,
        _cases(cases, default),
        name="encode",
        mistakes=ENCODE_MISTAKES,
        note="encode calls your merge: if it fails its check, fix it first.",
    )


def check_decode(fn, cases=None) -> None:
    """Check ``decode(ids, merges) -> str``; invalid UTF-8 must not raise."""
    default = [
        Case((ref_encode("lower newest", _MERGES), _MERGES), label="a round trip"),
        Case((list("é".encode()) + [256, 257], _MERGES), label="a two-byte character"),
        Case(([0xA9, 104, 105], _MERGES), label="a lone continuation byte"),
        Case(([0xF0, 0x9F, 0x98, 104], _MERGES), label="a character cut short"),
        Case(([], _MERGES), label="empty"),
    ]
    check_function(fn, ref_decode, _cases(cases, default), name="decode", mistakes=DECODE_MISTAKES)


def check_encode_with_special(fn, cases=None) -> None:
    """Check ``encode_with_special(text, merges, special_tokens) -> list[int]``."""
    default = [
        Case(("low<|endoftext|>lower", _MERGES, _SPECIALS), label="one special token"),
        Case(("a <|sep|> b <|endoftext|>\n", _MERGES, _SPECIALS), label="two special tokens"),
        Case(("no special here", _MERGES, _SPECIALS), label="no special token"),
        Case(("x<|sep|><|sep|>y", _MERGES, _SPECIALS), label="the longest special token wins"),
        Case(("lower newer", _MERGES, []), label="an empty list of special tokens"),
    ]
    check_function(
        fn,
        ref_encode_with_special,
        _cases(cases, default),
        name="encode_with_special",
        mistakes=SPECIAL_MISTAKES,
        note="encode_with_special calls your encode: if it fails its check, fix it first.",
    )
