"""Every notebook follows the course's conventions, and notebooks/ is generated, not edited."""

from __future__ import annotations

import ast
import filecmp
from pathlib import Path

import pytest

from course_lib.autograde import exercise_ids, grade_id
from course_lib.release import release
from tests.notebook_harness import ASSIGNMENTS, ROOT, read, solution_path, student_path

pytestmark = pytest.mark.parametrize("assignment", ASSIGNMENTS)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks(assignment):
    assert solution_path(assignment).is_file()
    assert student_path(assignment).is_file(), "run `course release` to generate it"


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """The student notebooks exactly as `course release` generates them now."""
    out = tmp_path_factory.mktemp("released")
    release(root=ROOT, out_dir=out)
    return out


def test_student_notebook_is_what_release_generates(assignment, released):
    generated, committed = released / assignment, ROOT / "notebooks" / assignment
    comparison = filecmp.dircmp(generated, committed, ignore=[".ipynb_checkpoints"])
    assert not comparison.left_only and not comparison.right_only, (
        f"files differ: only generated {comparison.left_only}, only committed "
        f"{comparison.right_only}; run `course release {assignment}`"
    )
    for name in comparison.common_files:
        assert (generated / name).read_bytes() == (committed / name).read_bytes(), (
            f"notebooks/{assignment}/{name} differs from what `course release` generates: "
            "edit solutions/ and run `course release`, never edit notebooks/ by hand"
        )


@pytest.mark.parametrize("which", ["solution", "student"])
def test_stored_clean(assignment, which):
    path = solution_path(assignment) if which == "solution" else student_path(assignment)
    nb = read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in _code_cells(nb):
        assert not cell.outputs, f"{path.name}: cell {cell.get('id')} stored with outputs"
        assert cell.execution_count is None
    ids = [c.get("id") for c in nb.cells]
    assert None not in ids and len(set(ids)) == len(ids), "cell ids must be present and unique"
    gids = [grade_id(c) for c in nb.cells if grade_id(c)]
    assert len(set(gids)) == len(gids), "grade ids must be unique"


def test_every_exercise_has_a_visible_check_and_hidden_tests(assignment):
    nb = read(solution_path(assignment))
    cells = {grade_id(c): c for c in nb.cells if grade_id(c)}
    exercises = exercise_ids(nb)
    assert exercises, "a notebook needs at least one exercise"
    for exercise in exercises:
        assert "### BEGIN SOLUTION" in cells[exercise].source
        check, hidden = cells.get(f"{exercise}-check"), cells.get(f"{exercise}-hidden")
        assert check is not None, f"{exercise} has no visible check cell"
        assert hidden is not None, f"{exercise} has no hidden tests cell"
        assert "### BEGIN HIDDEN TESTS" in hidden.source
        check_points = check.metadata.nbgrader["points"]
        hidden_points = hidden.metadata.nbgrader["points"]
        assert check_points > 0 and hidden_points > check_points, (
            f"{exercise}: hidden tests ({hidden_points}) should be worth more than the "
            f"visible check ({check_points})"
        )


def test_student_version_hides_solutions_and_hidden_tests(assignment):
    nb = read(student_path(assignment))
    text = "\n".join(c.source for c in nb.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    for exercise in exercise_ids(nb):
        cell = next(c for c in nb.cells if grade_id(c) == exercise)
        assert "raise NotImplementedError()" in cell.source
        assert "pass\n" not in cell.source


def test_test_cells_leave_no_number_behind(assignment):
    """nbgrader reads a number left as a test cell's last expression as partial credit."""
    nb = read(solution_path(assignment))
    for cell in _code_cells(nb):
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade"):
            continue
        tree = ast.parse(cell.source)
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            assert isinstance(last.value, ast.Call), (
                f"{meta['grade_id']}: a test cell must not end with a bare expression"
            )
