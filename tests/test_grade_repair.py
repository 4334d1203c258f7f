"""Reading broken notebooks, restoring graded cells, and flagging tampering code.

These run without nbgrader, on the real student notebook of 01_tokenization: the
batch in test_grade_robust.py proves the same cases end to end.
"""

from __future__ import annotations

import copy
import json

import nbformat
import pytest

from course_lib.autograde import grade_id
from course_lib.grading.repair import UnreadableNotebook, read_cells, repair
from course_lib.grading.review import suspicious_code
from tests.test_grade_support import EXERCISES, STUDENT, cell, solved, with_answer_code

FIRST = EXERCISES[0]


def _write(tmp_path, content) -> object:
    path = tmp_path / "handed_in.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        nbformat.write(content, str(path))
    return path


def _repaired(tmp_path, nb):
    return repair(read_cells(_write(tmp_path, nb)), STUDENT)


def _graded_ids(nb):
    return [grade_id(c) for c in nb.cells if grade_id(c)]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"   \n", "empty"), (b'{"cells": [', "not valid"), (b"[1, 2]", "object")],
    ids=["empty", "blank", "cut-off", "not-an-object"],
)
def test_unreadable_files_raise_with_the_reason(tmp_path, content, message):
    with pytest.raises(UnreadableNotebook, match=message):
        read_cells(_write(tmp_path, content))


def test_an_untouched_notebook_comes_back_unchanged(tmp_path):
    nb, notes = _repaired(tmp_path, STUDENT)
    assert notes == []
    assert [c.source for c in nb.cells] == [c.source for c in STUDENT.cells]
    nbformat.validate(nb)


def test_format_3_is_converted(tmp_path):
    old = solved()
    for c in old.cells:
        c.pop("id", None)
    text = nbformat.writes(nbformat.convert(old, 3), version=3)
    nb, _ = _repaired(tmp_path, text)
    assert _graded_ids(nb) == _graded_ids(STUDENT)
    assert cell(nb, FIRST).source == cell(solved(), FIRST).source


def test_a_newer_format_with_unknown_fields_is_read(tmp_path):
    data = json.loads(nbformat.writes(solved()))
    data["nbformat_minor"] = 99
    for c in data["cells"]:
        c["unknown"] = 1
        c.get("metadata", {}).get("nbgrader", {})["schema_version"] = 42
    nb, _ = _repaired(tmp_path, json.dumps(data))
    nbformat.validate(nb)
    assert all(
        c.metadata.nbgrader.schema_version == 3 for c in nb.cells if "nbgrader" in c.metadata
    )


def test_copies_of_graded_cells_are_dropped_or_kept_as_plain_code(tmp_path):
    nb = solved()
    answer, check = cell(nb, FIRST), cell(nb, f"{FIRST}-check")
    nb.cells.insert(nb.cells.index(check) + 1, copy.deepcopy(check))
    nb.cells.insert(nb.cells.index(answer) + 1, copy.deepcopy(answer))
    repaired, notes = _repaired(tmp_path, nb)
    ids = _graded_ids(repaired)
    assert len(ids) == len(set(ids)) == len(_graded_ids(STUDENT))
    copies = [c for c in repaired.cells if c.source == answer.source and not grade_id(c)]
    assert len(copies) == 1
    assert len({c.id for c in repaired.cells}) == len(repaired.cells)
    assert any("dropped a copy" in n for n in notes)


def test_deleted_cells_come_back_in_place(tmp_path):
    nb = solved()
    gone = {FIRST, f"{FIRST}-check", "code-001"}
    nb.cells = [c for c in nb.cells if grade_id(c) not in gone]
    repaired, notes = _repaired(tmp_path, nb)
    assert _graded_ids(repaired) == _graded_ids(STUDENT)
    assert "NotImplementedError" in cell(repaired, FIRST).source
    assert f"restored deleted cell {FIRST}" in notes


def test_edited_tests_and_points_are_restored(tmp_path):
    nb = solved()
    check = cell(nb, f"{FIRST}-check")
    check.source = "pass"
    cell(nb, f"{FIRST}-hidden").metadata.nbgrader.points = 100
    repaired, notes = _repaired(tmp_path, nb)
    assert cell(repaired, f"{FIRST}-check").source == cell(STUDENT, f"{FIRST}-check").source
    assert cell(repaired, f"{FIRST}-hidden").metadata.nbgrader.points == (
        cell(STUDENT, f"{FIRST}-hidden").metadata.nbgrader.points
    )
    assert f"restored test cell {FIRST}-check" in notes
    assert f"restored the points of {FIRST}-hidden" in notes


def test_an_answer_turned_into_markdown_is_code_again(tmp_path):
    nb = solved()
    answer = cell(nb, FIRST)
    answer.cell_type = "markdown"
    del answer["outputs"], answer["execution_count"]
    repaired, _ = _repaired(tmp_path, nb)
    assert cell(repaired, FIRST).cell_type == "code"
    assert cell(repaired, FIRST).source == answer.source


def test_cells_the_student_added_stay_and_lose_foreign_nbgrader_metadata(tmp_path):
    nb = solved()
    extra = nbformat.v4.new_code_cell("helper = 1")
    extra.metadata["nbgrader"] = {"grade": True, "grade_id": "free_points", "points": 50}
    nb.cells.insert(3, extra)
    repaired, _ = _repaired(tmp_path, nb)
    kept = next(c for c in repaired.cells if c.source == "helper = 1")
    assert "nbgrader" not in kept.metadata
    assert repaired.cells.index(kept) == 3


def test_honest_solutions_are_not_flagged():
    assert suspicious_code(solved(), STUDENT) == []


@pytest.mark.parametrize(
    ("code", "finding"),
    [
        ("ex.check_merge = lambda *args, **kwargs: None", "assigns to ex.check_merge"),
        ("def check_merge(*args):\n    pass", "defines a function named check_merge"),
        ("ex = None", "assigns to ex"),
        ("import builtins\nbuiltins.print = None", "imports the builtins module"),
        ("AssertionError = KeyError", "assigns to AssertionError"),
        ("__builtins__.__import__ = None", "uses __builtins__"),
        ("import sys\nsys.modules['course_lib.checks'] = None", "sys.modules"),
        ("get_ipython().set_custom_exc((Exception,), lambda *a: None)", "set_custom_exc"),
        ("import course_lib.checks\ncourse_lib.checks.TOLERANCES.clear()", "course_lib"),
        ("setattr(ex, 'check_merge', print)", "calls setattr on ex"),
        ("exec('x = 1')", "calls exec"),
        ("!cat /etc/passwd", "uses get_ipython"),
    ],
    ids=[
        "check-attr",
        "check-def",
        "exercise-module",
        "builtins-module",
        "assertion",
        "dunder-builtins",
        "sys-modules",
        "ipython-hook",
        "course-lib-attr",
        "setattr",
        "exec",
        "shell-escape",
    ],
)
def test_code_that_could_change_its_tests_is_flagged(code, finding):
    nb = with_answer_code(solved(), FIRST, code)
    found = suspicious_code(nb, STUDENT)
    assert any(finding in line for line in found), found
    assert all(line.startswith(f"answer cell {FIRST}") for line in found)


def test_harmless_magics_are_not_flagged():
    nb = with_answer_code(solved(), FIRST, "%timeit sorted([3, 1, 2])")
    assert suspicious_code(nb, STUDENT) == []
