"""Real nbgrader autograding of every notebook in a temporary course folder.

Three submissions per notebook are graded in one nbgrader run: the solution (full
marks, no error and nothing on stderr in a graded cell), the untouched student
version (zero, and every error a NotImplementedError), and the student version with
only its first exercise solved (exactly that exercise's points).
"""

from __future__ import annotations

import pytest

from course_lib.autograde import (
    autograde,
    exercise_ids,
    exercise_points,
    fill_solutions,
    prepare_course,
)
from tests.notebook_harness import ASSIGNMENTS, SOLUTIONS, read, solution_path, student_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=ASSIGNMENTS)
def graded(request, tmp_path_factory):
    assignment = request.param
    course = prepare_course(tmp_path_factory.mktemp(assignment), SOLUTIONS, assignment)
    source, student = read(solution_path(assignment)), read(student_path(assignment))
    exercises = exercise_ids(source)
    submissions = {
        "complete": fill_solutions(student, source, exercises),
        "untouched": student,
        "first-only": fill_solutions(student, source, exercises[:1]),
    }
    grades = autograde(course, assignment, submissions)
    return assignment, course, source, grades


def _outputs(course, student, assignment):
    nb = read(course / "autograded" / student / assignment / f"{assignment}.ipynb")
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield cell, cell.outputs


def _total(cell_grades):
    return sum(g.score for g in cell_grades), sum(g.max_score for g in cell_grades)


def test_complete_submission_gets_full_marks(graded):
    assignment, course, _, grades = graded
    score, maximum = _total(grades["complete"])
    assert maximum > 0 and score == maximum, [
        g for g in grades["complete"] if g.score < g.max_score
    ]
    for cell, outputs in _outputs(course, "complete", assignment):
        for out in outputs:
            assert out.output_type != "error", f"{cell.get('id')}: {out.get('ename')}"
            graded_cell = cell.metadata.get("nbgrader", {}).get("grade")
            if graded_cell:
                assert not (out.output_type == "stream" and out.name == "stderr"), (
                    f"graded cell {cell.get('id')} writes to stderr: {out.text[:300]}"
                )


def test_untouched_student_notebook_gets_zero(graded):
    assignment, course, _, grades = graded
    score, maximum = _total(grades["untouched"])
    assert maximum > 0 and score == 0
    errors = [
        out.ename
        for _, outputs in _outputs(course, "untouched", assignment)
        for out in outputs
        if out.output_type == "error"
    ]
    assert errors, "the untouched notebook should stop at the unsolved exercises"
    assert set(errors) == {"NotImplementedError"}, errors


def test_one_solved_exercise_earns_exactly_its_points(graded):
    _, _, source, grades = graded
    first = exercise_ids(source)[0]
    score, _ = _total(grades["first-only"])
    assert score == exercise_points(source, first)
