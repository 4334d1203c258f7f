"""Tokenizers: one id per character, and byte-level byte-pair encoding (BPE).

Byte-level BPE
--------------
Text is first encoded as UTF-8, so ids 0..255 are the 256 byte values and any string can be
tokenized. Training repeatedly replaces the most frequent adjacent pair of ids by a new id:
merge ``i`` gets id ``256 + i``. Special tokens (such as ``"<|endoftext|>"``) get the ids after
the merges, in the order given.

Rules shared by both trainers (``train_bpe_simple`` and ``train_bpe``), so that they learn the
same merges:

- Pairs are counted overlapping: ``[5, 5, 5]`` holds the pair ``(5, 5)`` twice.
- Ties: the most frequent pair wins; among equally frequent pairs, the smallest
  ``(first id, second id)`` wins (not the one seen first in the text).
- Stop: training stops early when the most frequent pair occurs fewer than
  ``MIN_PAIR_COUNT`` (2) times, so the vocabulary may end up smaller than asked.
- Pre-splitting: the text is cut into chunks by the regular expression ``pattern`` and merges
  never cross a chunk boundary. ``DEFAULT_PATTERN`` keeps contractions (``'s``, ``'ll``, ...),
  words with their leading space, numbers with their leading space, runs of other symbols with
  their leading space, and runs of whitespace as separate chunks. ``pattern=None`` keeps the
  whole text as one chunk.

Encoding applies the learned merges to each chunk, lowest rank first; this gives the same ids
as applying every merge in training order (``encode_simple``), because a merge can only create
pairs that contain its new id, and those were learned later.

Special tokens are never produced from ordinary text unless asked: with the default
``allowed_special="none"`` the text ``"<|endoftext|>"`` is encoded as ordinary bytes, so user
text cannot inject a control token. ``allowed_special="all"`` (or a set of special strings) turns
those strings into their single ids.

Saved tokenizers are versioned JSON files; ``save`` refuses to replace an existing file unless
called with ``overwrite=True``, and ``load`` raises ``ValueError`` naming the file when it is not
a tokenizer this version can read.
"""

from __future__ import annotations

import codecs
import heapq
import itertools
import json
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

# Contractions | letters | digits | other symbols (each with an optional leading space) |
# whitespace that leaves its last space to the next word | any other whitespace.
DEFAULT_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"
MIN_PAIR_COUNT = 2
FORMAT_VERSION = 1
_CACHE_LIMIT = 100_000  # chunks remembered by BPETokenizer.encode

Pair = tuple[int, int]


# ----------------------------------------------------------------------------------------------
# Small helpers shared by the tokenizers
# ----------------------------------------------------------------------------------------------


def _as_id_list(ids: Iterable[int]) -> list:
    # Accept lists, tuples, numpy arrays and torch tensors alike.
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


def _lookup(table: Sequence, ids: Iterable[int]) -> list:
    """Return ``[table[i] for i in ids]``, with a clear error for a non-integer or unknown id."""
    out = []
    for pos, token in enumerate(_as_id_list(ids)):
        try:
            i = operator.index(token)
        except TypeError:
            raise TypeError(
                f"token ids must be integers, got {token!r} at position {pos}"
            ) from None
        if not 0 <= i < len(table):
            raise ValueError(
                f"unknown token id {i} at position {pos}: ids run from 0 to {len(table) - 1}"
            )
        out.append(table[i])
    return out


def _write_json(path: str | Path, payload: dict, overwrite: bool) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")


def _read_json(path: str | Path, kind: str) -> dict:
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a saved {kind} (not valid JSON: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        raise ValueError(f"{path} is not a saved {kind} (missing 'format': {kind!r})")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {payload.get('version')!r}; "
            f"this library reads version {FORMAT_VERSION}"
        )
    return payload


# ----------------------------------------------------------------------------------------------
# Character tokenizer
# ----------------------------------------------------------------------------------------------


class CharTokenizer:
    """One id per character; the vocabulary is a fixed list of characters."""

    def __init__(self, chars: Sequence[str]):
        chars = tuple(chars)
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"each vocabulary entry must be one character, got {ch!r}")
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("the vocabulary must be a non-empty list of distinct characters")
        self.chars = chars
        self._index = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from the sorted set of characters in ``text``."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"text must be a non-empty str, got {text!r:.40}")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Return one id per character; an unknown character raises ``ValueError``."""
        try:
            return [self._index[ch] for ch in text]
        except KeyError:
            pos = next(i for i, ch in enumerate(text) if ch not in self._index)
            raise ValueError(
                f"character {text[pos]!r} at position {pos} is not in the vocabulary"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of ``ids``; an unknown id raises ``ValueError``."""
        return "".join(_lookup(self.chars, ids))

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write the vocabulary as JSON; an existing file is kept unless ``overwrite=True``."""
        payload = {"format": "CharTokenizer", "version": FORMAT_VERSION, "chars": self.chars}
        _write_json(path, payload, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read a tokenizer written by ``save``; a bad file raises ``ValueError``."""
        payload = _read_json(path, "CharTokenizer")
        try:
            return cls(payload["chars"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} holds a broken CharTokenizer: {err}") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------------------------
# BPE building blocks (the algorithm as taught)
# ----------------------------------------------------------------------------------------------


def split_chunks(text: str, pattern: str | None = DEFAULT_PATTERN) -> list[str]:
    """Cut ``text`` into the chunks that merges may not cross.

    Args:
        text: the text to cut.
        pattern: a regular expression (Python ``re``) whose matches must cover the whole
            text, or ``None`` to keep the text as one chunk.

    Returns:
        The non-empty chunks, in order; ``"".join(chunks) == text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if pattern is None:
        return [text] if text else []
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str or None, got {type(pattern).__name__}")
    chunks = [m.group(0) for m in re.finditer(pattern, text) if m.end() > m.start()]
    if sum(map(len, chunks)) != len(text):
        raise ValueError(f"pattern {pattern!r} does not cover every character of the text")
    return chunks


def count_pairs(ids: Sequence[int], counts: dict[Pair, int] | None = None) -> dict[Pair, int]:
    """Count adjacent pairs of ids, overlapping: ``[5, 5, 5]`` gives ``{(5, 5): 2}``.

    Args:
        ids: a sequence of token ids.
        counts: a dict to add to (updated in place), or ``None`` to start a new one.

    Returns:
        The dict mapping each pair to its count.
    """
    counts = {} if counts is None else counts
    for pair in itertools.pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` by ``new_id``, left to right, without overlap.

    ``merge([5, 5, 5], (5, 5), 256)`` gives ``[256, 5]``.
    """
    first, second = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _best_pair(counts: dict[Pair, int]) -> Pair | None:
    # Most frequent pair, smallest pair among ties; None when nothing is worth merging.
    if not counts:
        return None
    best = min(counts, key=lambda p: (-counts[p], p))
    return best if counts[best] >= MIN_PAIR_COUNT else None


def _check_vocab_size(vocab_size: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an int >= 256 (the byte ids), got {vocab_size!r}")


def train_bpe_simple(
    text: str, vocab_size: int, pattern: str | None = DEFAULT_PATTERN
) -> list[Pair]:
    """Learn BPE merges the plain way: recount every pair after every merge.

    Args:
        text: the training text.
        vocab_size: 256 plus the number of merges wanted (fewer if training stops early).
        pattern: the pre-split expression (see ``split_chunks``); ``None`` for no pre-split.

    Returns:
        The merges in order; merge ``i`` creates id ``256 + i``.
    """
    _check_vocab_size(vocab_size)
    chunks = [list(chunk.encode("utf-8")) for chunk in split_chunks(text, pattern)]
    merges: list[Pair] = []
    for new_id in range(256, vocab_size):
        # Count every pair in every chunk, pick the best, replace it everywhere.
        counts: dict[Pair, int] = {}
        for ids in chunks:
            count_pairs(ids, counts)
        best = _best_pair(counts)
        if best is None:
            break
        chunks = [merge(ids, best, new_id) for ids in chunks]
        merges.append(best)
    return merges


def encode_simple(
    text: str, merges: Sequence[Pair], pattern: str | None = DEFAULT_PATTERN
) -> list[int]:
    """Encode by applying every merge in training order to each chunk (slow reference)."""
    ids: list[int] = []
    for chunk in split_chunks(text, pattern):
        chunk_ids = list(chunk.encode("utf-8"))
        for i, pair in enumerate(merges):
            chunk_ids = merge(chunk_ids, pair, 256 + i)
        ids.extend(chunk_ids)
    return ids


# ----------------------------------------------------------------------------------------------
# Fast training: counts are updated only where a merge changed something
# ----------------------------------------------------------------------------------------------


def train_bpe(
    text: str, vocab_size: int, pattern: str | None = DEFAULT_PATTERN, progress: bool = False
) -> list[Pair]:
    """Learn the same merges as ``train_bpe_simple``, incrementally.

    One algorithm serves short chunks (the default pattern) and one long chunk
    (``pattern=None``) alike:

    - Identical chunks are stored once, with their frequency as a weight.
    - The stored chunks are laid end to end as one doubly linked list of positions (arrays
      ``value``, ``prev``, ``nxt``; ``-1`` marks the edge of a chunk), so replacing a pair
      by its new id is a constant-time unlink.
    - An index maps each pair to the positions where it starts; a merge visits only those
      positions, left to right, and updates the counts of the neighbouring pairs. Entries
      that went stale (the pair left that position) are skipped when visited.
    - A heap with lazy deletion (entries whose count is out of date are dropped when they
      reach the top) finds the best pair under the same tie rule.

    Args:
        text: the training text.
        vocab_size: 256 plus the number of merges wanted (fewer if training stops early).
        pattern: the pre-split expression; ``None`` for no pre-split.
        progress: show a progress bar.

    Returns:
        The merges in order; merge ``i`` creates id ``256 + i``.
    """
    _check_vocab_size(vocab_size)
    # Unique chunks laid end to end: per position its id, its chunk's frequency and links to
    # the neighbouring positions (-1 at the edges of a chunk). Pair counts are weighted by
    # frequency; ``where`` lists the positions where each pair starts.
    value: list[int] = []
    weight: list[int] = []
    prev: list[int] = []
    nxt: list[int] = []
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, list[int]] = defaultdict(list)
    for chunk, freq in Counter(split_chunks(text, pattern)).items():
        data = chunk.encode("utf-8")
        start, end = len(value), len(value) + len(data)
        value.extend(data)
        weight.extend([freq] * len(data))
        prev.extend(range(start - 1, end - 1))
        nxt.extend(range(start + 1, end + 1))
        prev[start], nxt[end - 1] = -1, -1
        for i, pair in enumerate(itertools.pairwise(data), start):
            counts[pair] += freq
            where[pair].append(i)

    # A max-heap of (count, pair), as a min-heap of (-count, pair): ties go to the smallest pair.
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    for new_id in tqdm(range(256, vocab_size), disable=not progress, desc="BPE merges"):
        # Drop stale heap entries until the top holds a pair's current count.
        while heap and counts.get(heap[0][1]) != -heap[0][0]:
            heapq.heappop(heap)
        if not heap or -heap[0][0] < MIN_PAIR_COUNT:
            break
        best = heapq.heappop(heap)[1]
        merges.append(best)
        first, second = best

        # Visit the positions of the pair left to right, as ``merge`` scans a chunk, and
        # collect how the count of each neighbouring pair changes. (Each list is filled in
        # position order already; sorting costs little and makes the order explicit.)
        delta: dict[Pair, int] = defaultdict(int)
        for i in sorted(where.pop(best)):
            # Skip a position whose pair changed since it was listed, for example the
            # middle of "aaa" after its first two bytes were merged.
            j = nxt[i]
            if j < 0 or value[i] != first or value[j] != second:
                continue
            w = weight[i]
            delta[best] -= w

            # The pair ending at i, (left, first), becomes (left, new_id).
            left = prev[i]
            if left >= 0:
                delta[value[left], first] -= w
                delta[value[left], new_id] += w
                where[value[left], new_id].append(left)

            # The pair starting at j, (second, right), becomes (new_id, right).
            right = nxt[j]
            if right >= 0:
                delta[second, value[right]] -= w
                delta[new_id, value[right]] += w
                where[new_id, value[right]].append(i)
                prev[right] = i

            # Position i takes the new id; position j leaves the list.
            value[i] = new_id
            value[j] = -1
            nxt[i] = right

        # Apply the changes, push the new counts and forget pairs that vanished.
        for pair, change in delta.items():
            if change:
                counts[pair] += change
                if counts[pair]:
                    heapq.heappush(heap, (-counts[pair], pair))
                else:
                    del counts[pair]
        assert best not in counts, "a merged pair cannot survive its merge"
    return merges


# ----------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE tokenizer with optional special tokens.

    Args:
        merges: the learned pairs; merge ``i`` creates id ``256 + i`` and may only use ids
            below that.
        special_tokens: distinct non-empty strings, given the ids after the merges in order.
        pattern: the pre-split expression used in training (``None`` for no pre-split).
    """

    def __init__(
        self,
        merges: Sequence[Pair],
        special_tokens: Sequence[str] = (),
        pattern: str | None = DEFAULT_PATTERN,
    ):
        # Validate the merges: pairs of ids that already exist when the merge is made.
        self._merges: tuple[Pair, ...] = tuple(merges)
        for i, pair in enumerate(self._merges):
            ok = isinstance(pair, (tuple, list)) and len(pair) == 2
            if not ok or not all(type(t) is int and 0 <= t < 256 + i for t in pair):
                raise ValueError(f"merge {i} must be a pair of ids below {256 + i}, got {pair!r}")
        self._merges = tuple((first, second) for first, second in self._merges)
        self._ranks = {pair: i for i, pair in enumerate(self._merges)}
        if len(self._ranks) != len(self._merges):
            raise ValueError("the merges contain the same pair twice")

        # Validate the special tokens.
        if isinstance(special_tokens, str):
            raise TypeError(
                f"special_tokens must be a list of str, not the str {special_tokens!r}"
            )
        specials = list(special_tokens)
        for token in specials:
            if not isinstance(token, str) or not token:
                raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct, got {specials!r}")
        split_chunks("", pattern)  # type check of the pattern
        self._pattern = pattern
        first_special = 256 + len(self._merges)
        self._special = {token: first_special + k for k, token in enumerate(specials)}

        # The bytes of every id, built bottom-up from the merges.
        table = [bytes([b]) for b in range(256)]
        for first, second in self._merges:
            table.append(table[first] + table[second])
        table.extend(token.encode("utf-8") for token in specials)
        self._id_bytes = table
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        pattern: str | None = DEFAULT_PATTERN,
        progress: bool = False,
    ) -> BPETokenizer:
        """Train on ``text`` with ``train_bpe``.

        ``vocab_size`` counts the 256 bytes, the merges and the special tokens; it ends up
        smaller if training stops early (see the module docstring).
        """
        _check_vocab_size(vocab_size)
        n_special = 0 if isinstance(special_tokens, str) else len(list(special_tokens))
        if vocab_size - n_special < 256:
            raise ValueError(
                f"vocab_size={vocab_size} leaves no room for the 256 bytes "
                f"and {n_special} special tokens"
            )
        merges = train_bpe(text, vocab_size - n_special, pattern=pattern, progress=progress)
        return cls(merges, special_tokens, pattern)

    @property
    def pattern(self) -> str | None:
        """The pre-split expression (read-only: the encode cache depends on it)."""
        return self._pattern

    @property
    def merges(self) -> list[Pair]:
        return list(self._merges)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def vocab_size(self) -> int:
        return len(self._id_bytes)

    def id_to_bytes(self, token_id: int) -> bytes:
        """Return the bytes that one id stands for."""
        return _lookup(self._id_bytes, [token_id])[0]

    def _encode_chunk(self, chunk: str) -> list[int]:
        # Apply the lowest-ranked merge present until none applies; remember the result.
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids = list(chunk.encode("utf-8"))
        ranks = self._ranks
        while len(ids) > 1:
            pair = min(itertools.pairwise(ids), key=lambda p: ranks.get(p, len(ranks)))
            if pair not in ranks:
                break
            ids = merge(ids, pair, 256 + ranks[pair])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in split_chunks(text, self._pattern):
            ids.extend(self._encode_chunk(chunk))
        return ids

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none") -> list[int]:
        """Return the ids of ``text``.

        Args:
            text: the text to encode.
            allowed_special: ``"none"`` (special-token strings are encoded as ordinary text),
                ``"all"``, or a collection of special-token strings to turn into their ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        # Work out which special strings to honour.
        if allowed_special == "none":
            allowed: set[str] = set()
        elif allowed_special == "all":
            allowed = set(self._special)
        elif isinstance(allowed_special, str):
            raise ValueError(
                f"allowed_special must be 'none', 'all' or a set of special tokens, "
                f"got {allowed_special!r}"
            )
        else:
            allowed = set(allowed_special)
            unknown = sorted(allowed - set(self._special))
            if unknown:
                raise ValueError(f"unknown special tokens {unknown}; known: {list(self._special)}")
        if not allowed:
            return self._encode_ordinary(text)

        # Cut the text at the allowed special strings (longest first) and encode the rest.
        alternatives = sorted(allowed, key=lambda s: (-len(s), s))
        ids: list[int] = []
        start = 0
        for match in re.finditer("|".join(map(re.escape, alternatives)), text):
            ids.extend(self._encode_ordinary(text[start : match.start()]))
            ids.append(self._special[match.group(0)])
            start = match.end()
        ids.extend(self._encode_ordinary(text[start:]))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Return the bytes of ``ids``; an unknown id raises ``ValueError``."""
        return b"".join(_lookup(self._id_bytes, ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of ``ids``.

        Bytes that are not valid UTF-8 (a sequence of ids may stop inside a character) become
        the replacement character U+FFFD instead of raising; an id outside the vocabulary is
        still a ``ValueError``.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write the tokenizer as JSON; an existing file is kept unless ``overwrite=True``."""
        payload = {
            "format": "BPETokenizer",
            "version": FORMAT_VERSION,
            "pattern": self._pattern,
            "merges": [list(pair) for pair in self._merges],
            "special_tokens": list(self._special),
        }
        _write_json(path, payload, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer written by ``save``; a bad file raises ``ValueError``."""
        payload = _read_json(path, "BPETokenizer")
        try:
            return cls(payload["merges"], payload["special_tokens"], payload["pattern"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} holds a broken BPETokenizer: {err}") from None

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={list(self._special)})"
        )


class StreamingDecoder:
    """Decode ids as they arrive, emitting only whole characters.

    A character whose UTF-8 bytes are spread over several tokens is held back until its last
    byte arrives, so it is emitted once, whole. ``feed`` pieces joined with ``flush`` equal
    ``tokenizer.decode`` of all the ids.

    Args:
        tokenizer: a ``BPETokenizer`` (anything with ``decode_bytes``).
    """

    def __init__(self, tokenizer: BPETokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: int | Iterable[int]) -> str:
        """Take one id or several; return the complete characters now available."""
        if isinstance(ids, int) or getattr(ids, "ndim", None) == 0:
            ids = [ids]  # a single id (int, numpy scalar or 0-d tensor)
        return self._decoder.decode(self.tokenizer.decode_bytes(ids))

    def flush(self) -> str:
        """Return what is held back (U+FFFD for an incomplete character) and start afresh."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text
