"""The bundled demo class, and ``course grade`` run on it from the command line.

The demo must be what examples/make_demo.py builds from the current notebooks, and
one command must show the whole flow: a table, grades.csv with a status on every
row, and feedback pages that keep hidden tests hidden unless asked.
"""

from __future__ import annotations

import contextlib
import csv
import html
import importlib.util
import io
import re

import pytest

from course_lib.cli import main
from tests.test_grade_support import NOTEBOOK, ROOT, SOURCE, STUDENT, TOTAL, shared

DEMO = ROOT / "examples" / "demo_class"


def _make_demo():
    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "examples" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_demo_class_is_what_the_script_builds(tmp_path):
    built = _make_demo().build(ROOT, tmp_path / "demo_class")
    committed = sorted(p for p in DEMO.rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / "demo_class") for p in built] == [
        p.relative_to(DEMO) for p in committed
    ], "rerun python examples/make_demo.py"
    for new, old in zip(built, committed):
        assert new.read_bytes() == old.read_bytes(), (
            f"{old.relative_to(ROOT)} is stale: rerun python examples/make_demo.py"
        )


def _hidden_lines() -> list[str]:
    """Lines of the hidden tests that appear nowhere in the student notebook."""
    public = "\n".join(c.source for c in STUDENT.cells)
    lines = []
    for cell in SOURCE.cells:
        if "### BEGIN HIDDEN TESTS" in cell.source:
            region = cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN")[0]
            lines += [s.strip() for s in region.splitlines() if len(s.strip()) > 12]
    return [line for line in lines if line not in public]


def _page_text(path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def _grade_demo(folder) -> dict:
    """Run ``course grade --demo`` twice: as while submissions are open, then closed."""
    out = folder / "out"
    args = ["grade", "--demo", "--notebook", NOTEBOOK, "--out", str(out), "--workers", "2"]
    args += ["--timeout", "60", "--memory", "2048"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        first = main(args)
    with open(out / "grades.csv") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    page = _page_text(out / "feedback" / "bob" / f"{NOTEBOOK}.html")
    with contextlib.redirect_stdout(io.StringIO()):
        second = main([*args, "--show-hidden"])
    shown = _page_text(out / "feedback" / "bob" / f"{NOTEBOOK}.html")
    return {
        "exit": [first, second],
        "printed": printed.getvalue(),
        "rows": rows,
        "page": page,
        "shown": shown,
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return shared(tmp_path_factory, "demo", _grade_demo)


@pytest.mark.slow
def test_course_grade_demo_shows_the_whole_flow(demo):
    assert demo["exit"] == [0, 0]
    printed = demo["printed"]
    assert "student" in printed and "status" in printed and "grades.csv" in printed

    rows = demo["rows"]
    assert set(rows) == {"alice", "bob", "carol", "dave", "erin"}
    assert (rows["alice"]["status"], float(rows["alice"]["score"])) == ("graded", TOTAL)
    assert 0 < float(rows["bob"]["score"]) < TOTAL
    assert float(rows["carol"]["score"]) == 0
    assert (rows["dave"]["status"], rows["dave"]["score"]) == ("unreadable", "")
    assert "Copy1" in rows["erin"]["notes"] and float(rows["erin"]["score"]) == TOTAL


@pytest.mark.slow
def test_feedback_hides_hidden_tests_until_asked(demo):
    hidden = _hidden_lines()
    assert hidden, "the notebook has hidden tests"
    assert "hidden test failed" in demo["page"]
    assert not [line for line in hidden if line in demo["page"]]
    assert any(line in demo["shown"] for line in hidden)
