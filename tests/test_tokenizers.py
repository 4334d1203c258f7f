"""Tests of the character and byte-level BPE tokenizers."""

import json
import random

import numpy as np
import pytest
import torch

from course_lib.corpus import load_corpus, quick_slice
from course_lib.tokenizers import (
    DEFAULT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    StreamingDecoder,
    count_pairs,
    encode_simple,
    merge,
    split_chunks,
    train_bpe,
    train_bpe_simple,
)

SPECIAL = "<|endoftext|>"

ODD_STRINGS = [
    "",
    " ",
    "a",
    "\n",
    "\t\t x \t",
    "   leading and trailing   ",
    "line one\n\n\nline two\r\nthree\rfour",
    "aaaaaaaaaaaaaaaaaaaaaaa",
    "Hello, world! It's 2024; we'll see.",
    "snake_case __dunder__ and CONSTANT_NAME",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "中文字符和日本語のテキスト、한국어",
    "e\u0301 combining a\u0308\u0304 marks \u0338",
    "zero\u200bwidth\ufeffbom and \u00a0nbsp",
    "Ελληνικά, кириллица, العربية",
    "x²³ ½ ٣٤ ⅷ digits 0123",
    SPECIAL,
    f"before{SPECIAL}after {SPECIAL}{SPECIAL}",
    "<|endoftext",
    "\x00\x01 control \x7f chars",
]


def random_unicode(rng: random.Random, length: int) -> str:
    """A random string mixing ASCII, whitespace, accents, CJK, emoji and other planes."""
    pools = [
        (0x20, 0x7E),
        (0x09, 0x0D),
        (0xC0, 0x24F),
        (0x300, 0x36F),
        (0x4E00, 0x4E40),
        (0x1F600, 0x1F64F),
        (0x0, 0x10FFFF),
    ]
    chars = []
    while len(chars) < length:
        lo, hi = rng.choice(pools)
        cp = rng.randint(lo, hi)
        if not 0xD800 <= cp <= 0xDFFF:  # surrogates are not valid in UTF-8
            chars.append(chr(cp))
    return "".join(chars)


@pytest.fixture(scope="module")
def small_text():
    return quick_slice(30_000)


@pytest.fixture(scope="module")
def tokenizer(small_text):
    return BPETokenizer.train(small_text, 600, special_tokens=[SPECIAL, "<|pad|>"])


# ------------------------------------------------------------------------------ building blocks


def test_count_pairs_overlapping():
    assert count_pairs([5, 5, 5]) == {(5, 5): 2}
    assert count_pairs([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert count_pairs([]) == {} and count_pairs([7]) == {}
    counts = {(1, 2): 10}
    assert count_pairs([1, 2], counts) is counts and counts == {(1, 2): 11}


def test_merge_left_to_right_without_overlap():
    assert merge([5, 5, 5], (5, 5), 256) == [256, 5]
    assert merge([5, 5, 5, 5], (5, 5), 256) == [256, 256]
    assert merge([1, 2, 3, 1, 2], (1, 2), 300) == [300, 3, 300]
    assert merge([1, 2], (2, 1), 300) == [1, 2]
    assert merge([], (1, 2), 300) == []


def test_split_chunks_covers_text():
    assert split_chunks("I'll go, 2 ways  now\n") == [
        "I",
        "'ll",
        " go",
        ",",
        " 2",
        " ways",
        " ",
        " now",
        "\n",
    ]
    assert split_chunks("abc", None) == ["abc"] and split_chunks("", None) == []
    rng = random.Random(0)
    for _ in range(200):
        text = random_unicode(rng, rng.randint(0, 40))
        assert "".join(split_chunks(text)) == text
    with pytest.raises(ValueError, match="does not cover"):
        split_chunks("ab cd", r"[a-z]+")
    with pytest.raises(TypeError):
        split_chunks(b"bytes")


def test_tie_rule_smallest_pair_not_first_seen():
    # (c,d), (d,a) and (a,b) all occur twice; (a,b) = (97, 98) is the smallest.
    for train in (train_bpe_simple, train_bpe):
        assert train("cdabcdab", 257, pattern=None) == [(97, 98)]


def test_stop_rule_needs_a_pair_seen_twice():
    for train in (train_bpe_simple, train_bpe):
        assert train("abc", 1000, pattern=None) == []
        assert train("", 1000) == []
        assert train("aaa", 1000, pattern=None) == [(97, 97)]  # overlapping count of 2
        assert train("aaaaaaa", 1000, pattern=None) == [(97, 97), (256, 256)]


@pytest.mark.parametrize("vocab_size", [255, 100.0, True, "300"])
def test_bad_vocab_size(vocab_size):
    for train in (train_bpe_simple, train_bpe):
        with pytest.raises(ValueError, match="vocab_size"):
            train("hello hello", vocab_size)


# ------------------------------------------------------------------------ trainers agree exactly


def agreement_cases():
    rng = random.Random(1)
    texts = [
        "aaaaaaa",
        "aaaa aaaa aaaaa bbbb aaaa",
        "abababab abab ba ba",
        "the cat sat on the mat; the cat ate the rat.",
        "😀😀😀 中文中文中文 😀 emoji 👍🏽👍🏽",
        "e\u0301e\u0301e\u0301 cafe\u0301 cafe\u0301",
    ]
    texts += ["".join(rng.choice("ab ") for _ in range(300)) for _ in range(3)]  # many ties
    texts += ["".join(rng.choice("abc\n") for _ in range(500)) for _ in range(2)]
    texts += [random_unicode(rng, 200) for _ in range(2)]
    return texts


@pytest.mark.parametrize("pattern", [DEFAULT_PATTERN, None], ids=["pattern", "no-split"])
@pytest.mark.parametrize("vocab_size", [256, 260, 300, 400])
def test_incremental_trainer_matches_simple(pattern, vocab_size):
    for text in agreement_cases():
        assert train_bpe(text, vocab_size, pattern) == train_bpe_simple(text, vocab_size, pattern)


def test_incremental_trainer_matches_simple_on_corpus():
    text = quick_slice(12_000, split="val")
    assert train_bpe(text, 400) == train_bpe_simple(text, 400)
    short = quick_slice(3_000)
    assert train_bpe(short, 330, pattern=None) == train_bpe_simple(short, 330, pattern=None)


LONG_CHUNKS = [
    "a" * 2,
    "a" * 7,
    "a" * 64,
    "a" * 1000,
    "ab" * 4,
    "ab" * 500,
    "aab" * 300,
    "aaaab" * 200 + "b" * 50,
    "aaaaaaa bbbbbbb aaaaaaa " * 40,
    "abababab baba aaaa" * 30,
    "abcabcabc" * 100 + "cba" * 100,
    "😀" * 50 + "中文" * 80 + "👍🏽" * 40,
    "中文字符中文字符日本語の中文" * 30,
    "e\u0301" * 60 + "\u00e9" * 60,
]


@pytest.mark.parametrize("text", LONG_CHUNKS, ids=lambda t: f"{t[:12]!r}x{len(t)}")
def test_long_single_chunk_with_runs_matches_simple(text):
    # Overlapping runs: a merge of (x, x) in "xxxx..." must pair them left to right.
    for vocab_size in (257, 258, 270, 400):
        assert train_bpe(text, vocab_size, None) == train_bpe_simple(text, vocab_size, None)
    assert train_bpe(text, 300) == train_bpe_simple(text, 300)


def test_runs_merge_left_to_right():
    # "aaaaa" is [aa][aa][a]: then (aa, aa) is seen once and training stops.
    for train in (train_bpe_simple, train_bpe):
        assert train("aaaaa", 1000, pattern=None) == [(97, 97)]
        assert train("aaaaaa", 1000, pattern=None) == [(97, 97), (256, 256)]
        assert train("abababa", 1000, pattern=None) == [(97, 98), (256, 256)]
        assert train("aaaa" * 4, 1000, pattern=None) == [(97, 97), (256, 256), (257, 257)]


def test_ties_in_one_long_chunk():
    # Every pair of "abcd" * n occurs n or n - 1 times; the smallest of the most frequent wins.
    text = "dcba" * 50
    expected = train_bpe_simple(text, 300, None)
    assert train_bpe(text, 300, None) == expected
    assert expected[0] == (98, 97)  # (b, a), (c, b), (d, c) tie at 50; (a, d) has 49
    symmetric = "".join(chr(97 + i) + chr(97 + j) for i in range(6) for j in range(6)) * 3
    assert train_bpe(symmetric, 320, None) == train_bpe_simple(symmetric, 320, None)


@pytest.mark.parametrize("n_chars", [200, 1_000, 4_000, 10_000])
def test_no_split_on_corpus_at_several_sizes(n_chars):
    text = quick_slice(n_chars, split="val")
    vocab_size = 256 + min(60, n_chars // 20)
    assert train_bpe(text, vocab_size, None) == train_bpe_simple(text, vocab_size, None)


@pytest.mark.parametrize("alphabet", ["ab", "abc", "a b", "aab \n", "😀a"])
def test_random_tiny_alphabet_fuzz(alphabet):
    # Tiny alphabets give many ties and overlapping runs.
    rng = random.Random(f"bpe-fuzz-{alphabet}")
    for _ in range(60):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        vocab_size = 256 + rng.randint(0, 25)
        for pattern in (None, DEFAULT_PATTERN):
            expected = train_bpe_simple(text, vocab_size, pattern)
            assert train_bpe(text, vocab_size, pattern) == expected, (text, vocab_size, pattern)


# ----------------------------------------------------------------------------------- BPETokenizer


def test_trained_tokenizer_shape(tokenizer):
    assert tokenizer.vocab_size == 600
    assert len(tokenizer.merges) == 600 - 256 - 2
    assert tokenizer.special_tokens == {SPECIAL: 598, "<|pad|>": 599}
    assert tokenizer.id_to_bytes(65) == b"A"
    assert len(tokenizer.encode(" the")) == 1  # a common word became one token
    for i, (first, second) in enumerate(tokenizer.merges):
        assert tokenizer.id_to_bytes(256 + i) == tokenizer.id_to_bytes(
            first
        ) + tokenizer.id_to_bytes(second)


def test_encode_matches_naive_reference(tokenizer):
    text = quick_slice(5_000, split="val")
    assert tokenizer.encode(text) == encode_simple(text, tokenizer.merges)
    rng = random.Random(2)
    for _ in range(30):
        s = random_unicode(rng, 30) + " the and thou "
        assert tokenizer.encode(s) == encode_simple(s, tokenizer.merges)
    no_split = BPETokenizer.train(quick_slice(2_000), 300, pattern=None)
    text = quick_slice(1_000, split="val")
    assert no_split.encode(text) == encode_simple(text, no_split.merges, pattern=None)


@pytest.mark.parametrize("text", ODD_STRINGS)
def test_round_trip_odd_strings(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode(text, allowed_special="all")) == text


def test_round_trip_random_unicode(tokenizer):
    rng = random.Random(3)
    for _ in range(300):
        text = random_unicode(rng, rng.randint(0, 60))
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_round_trip_validation_text(tokenizer):
    text = quick_slice(50_000, split="val")
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(ids) < 0.6 * len(text)  # even 342 merges compress English well


def test_special_tokens_only_when_allowed(tokenizer):
    eot, pad = tokenizer.special_tokens[SPECIAL], tokenizer.special_tokens["<|pad|>"]
    text = f"Hail{SPECIAL} king<|pad|>"
    plain = tokenizer.encode(text)
    assert eot not in plain and pad not in plain
    assert tokenizer.encode(text, allowed_special="none") == plain
    allowed = tokenizer.encode(text, allowed_special="all")
    assert allowed == tokenizer.encode("Hail") + [eot] + tokenizer.encode(" king") + [pad]
    only_eot = tokenizer.encode(text, allowed_special={SPECIAL})
    assert eot in only_eot and pad not in only_eot
    assert tokenizer.encode(SPECIAL, allowed_special=[SPECIAL]) == [eot]
    assert tokenizer.decode([eot]) == SPECIAL


def test_longest_special_token_wins():
    tok = BPETokenizer([], special_tokens=["<a>", "<a><b>"])
    assert tok.encode("x<a><b><a>", allowed_special="all") == [ord("x"), 257, 256]


@pytest.mark.parametrize("allowed", ["some", ["<|unknown|>"], {"<|pad|>", "x"}])
def test_bad_allowed_special(tokenizer, allowed):
    with pytest.raises(ValueError, match="allowed_special|unknown special"):
        tokenizer.encode("hi", allowed_special=allowed)


@pytest.mark.parametrize("specials", [["<a>", "<a>"], [""], [None]])
def test_bad_special_tokens(specials):
    with pytest.raises(ValueError, match="special tokens"):
        BPETokenizer([], special_tokens=specials)
    with pytest.raises(TypeError):
        BPETokenizer([], special_tokens=SPECIAL)


def test_train_rejects_vocab_without_room_for_specials():
    with pytest.raises(ValueError, match="no room"):
        BPETokenizer.train("hello hello", 256, special_tokens=[SPECIAL])
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("hello hello", "300")


def test_special_tokens_count_in_vocab_size():
    tok = BPETokenizer.train("hello hello hello world " * 20, 262, special_tokens=[SPECIAL])
    assert tok.vocab_size <= 262 and tok.special_tokens[SPECIAL] == tok.vocab_size - 1
    assert tok.merges == train_bpe_simple("hello hello hello world " * 20, 261)


@pytest.mark.parametrize(
    "merges",
    [[(256, 1)], [(1, 2), (1, 2)], [(1, -1)], [(1, 2, 3)], [(1.0, 2)], [5], ["ab"]],
)
def test_bad_merges(merges):
    with pytest.raises(ValueError, match="merge"):
        BPETokenizer(merges)


def test_decode_never_raises_on_bad_bytes(tokenizer):
    assert tokenizer.decode([0xE2, 0x82]) == "\ufffd"  # a cut-off three-byte character
    assert tokenizer.decode([0xFF, 65]) == "\ufffdA"
    assert tokenizer.decode_bytes([0xE2, 0x82]) == b"\xe2\x82"
    rng = random.Random(4)
    for _ in range(100):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(20)]
        assert isinstance(tokenizer.decode(ids), str)


def test_decode_rejects_unknown_ids(tokenizer):
    for bad in (tokenizer.vocab_size, -1):
        with pytest.raises(ValueError, match=f"unknown token id {bad} at position 1"):
            tokenizer.decode([65, bad])
    with pytest.raises(TypeError, match="integers"):
        tokenizer.decode([65, 1.5])


def test_decode_accepts_arrays_and_tensors(tokenizer):
    ids = tokenizer.encode("To be, or not to be")
    assert tokenizer.decode(np.array(ids)) == "To be, or not to be"
    assert tokenizer.decode(torch.tensor(ids)) == "To be, or not to be"


def test_save_and_load(tokenizer, tmp_path):
    path = tmp_path / "bpe.json"
    tokenizer.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tokenizer.merges
    assert loaded.special_tokens == tokenizer.special_tokens
    assert loaded.pattern == tokenizer.pattern
    text = quick_slice(2_000, split="val") + SPECIAL
    assert loaded.encode(text, allowed_special="all") == tokenizer.encode(
        text, allowed_special="all"
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tokenizer.save(path)
    tokenizer.save(path, overwrite=True)


def test_load_rejects_bad_files(tokenizer, tmp_path):
    good = tmp_path / "good.json"
    tokenizer.save(good)
    payload = json.loads(good.read_text())
    cases = {
        "notjson": "{not json",
        "format": json.dumps({**payload, "format": "CharTokenizer"}),
        "version": json.dumps({**payload, "version": 99}),
        "merges": json.dumps({**payload, "merges": [[999, 1]]}),
        "missing": json.dumps({k: v for k, v in payload.items() if k != "merges"}),
        "list": json.dumps([1, 2]),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(content)
        with pytest.raises(ValueError, match=str(path.name)):
            BPETokenizer.load(path)


# ------------------------------------------------------------------------------ StreamingDecoder


def test_streaming_emits_emoji_once_whole():
    tok = BPETokenizer([])  # bytes only: the emoji arrives as four tokens
    stream = StreamingDecoder(tok)
    pieces = [stream.feed(i) for i in "😀".encode()]
    assert pieces == ["", "", "", "😀"]
    assert stream.feed([0xF0, 0x9F]) == "" and stream.flush() == "\ufffd"
    assert stream.feed(list(b"ok")) == "ok" and stream.flush() == ""


@pytest.mark.parametrize("text", ODD_STRINGS + ["😀 中 and 👍🏽 " * 5])
def test_streaming_one_token_at_a_time_matches_decode(tokenizer, text):
    ids = tokenizer.encode(text)
    stream = StreamingDecoder(tokenizer)
    pieces = [stream.feed(i) for i in ids]
    assert "".join(pieces) + stream.flush() == tokenizer.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_streaming_random_ids_match_decode(tokenizer):
    rng = random.Random(5)
    for _ in range(200):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(0, 12))]
        stream = StreamingDecoder(tokenizer)
        out = "".join(stream.feed(ids[i : i + 2]) for i in range(0, len(ids), 2))
        assert out + stream.flush() == tokenizer.decode(ids)


# --------------------------------------------------------------------------------- CharTokenizer


def test_char_tokenizer_round_trip(tmp_path):
    text = quick_slice(5_000)
    tok = CharTokenizer.from_text(text)
    assert list(tok.chars) == sorted(set(text)) and tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("\n") == [0]
    tok.save(tmp_path / "chars.json")
    loaded = CharTokenizer.load(tmp_path / "chars.json")
    assert loaded.chars == tok.chars
    with pytest.raises(FileExistsError):
        tok.save(tmp_path / "chars.json")


def test_char_tokenizer_errors(tmp_path):
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError, match=r"character '😀' at position 2"):
        tok.encode("ab😀c")
    with pytest.raises(ValueError, match="unknown token id 4"):
        tok.decode([0, 4])
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["ab"])
    (tmp_path / "bad.json").write_text(json.dumps({"format": "CharTokenizer", "version": 1}))
    with pytest.raises(ValueError, match="broken CharTokenizer"):
        CharTokenizer.load(tmp_path / "bad.json")


def test_char_tokenizer_on_whole_corpus():
    text = load_corpus("all")
    tok = CharTokenizer.from_text(text)
    assert 60 <= tok.vocab_size <= 90
    assert tok.decode(tok.encode(text[:10_000])) == text[:10_000]
