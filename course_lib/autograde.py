"""Autograding notebooks with nbgrader in a course folder, and reading the scores back.

Used by the test suite to prove that every notebook grades as it should (the
solution earns full marks, the untouched student version zero, one solved exercise
exactly its points) and by the instructor's grading command.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_lib.release import make_course_dir, run_nbgrader

__all__ = [
    "CellGrade",
    "autograde",
    "exercise_ids",
    "exercise_points",
    "fill_solutions",
    "grade_id",
    "prepare_course",
]

_SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


@dataclass(frozen=True)
class CellGrade:
    """The autograded score of one graded cell."""

    grade_id: str
    score: float
    max_score: float


def grade_id(cell: Mapping) -> str | None:
    """Return a cell's nbgrader grade id, or ``None`` for a cell nbgrader ignores."""
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def exercise_ids(nb: Mapping) -> list[str]:
    """Return the grade ids of the answer cells, in notebook order."""
    return [
        grade_id(cell)
        for cell in nb["cells"]
        if cell["cell_type"] == "code" and cell["metadata"].get("nbgrader", {}).get("solution")
    ]


def exercise_points(nb: Mapping, exercise: str) -> float:
    """Return the points of the graded cells that belong to ``exercise``."""
    total = 0.0
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id", "").rsplit("-", 1)[0] == exercise:
            total += float(meta.get("points", 0))
    return total


def _solution_source(source: str) -> str:
    """The answer cell's source with the solution markers removed."""
    return "\n".join(line for line in source.splitlines() if not _SOLUTION_MARKER.match(line))


def fill_solutions(student_nb: Mapping, source_nb: Mapping, exercises: Iterable[str]):
    """Return a copy of ``student_nb`` whose named answer cells hold the solutions.

    This is how a learner's notebook looks once they have solved those exercises
    exactly as the instructor did.
    """
    wanted = set(exercises)
    solutions = {
        grade_id(cell): _solution_source(cell["source"])
        for cell in source_nb["cells"]
        if grade_id(cell) in wanted
    }
    missing = wanted - set(solutions)
    if missing:
        raise ValueError(f"no answer cell with grade id {sorted(missing)[0]!r} in the source")
    filled = copy.deepcopy(student_nb)
    for cell in filled["cells"]:
        if grade_id(cell) in solutions:
            cell["source"] = solutions[grade_id(cell)]
    return nbformat.from_dict(filled)


def prepare_course(course_dir: Path, solutions_dir: Path, assignment: str) -> Path:
    """Create a course folder with ``assignment`` generated and recorded in its gradebook."""
    make_course_dir(course_dir, solutions_dir, [assignment])
    run_nbgrader(course_dir, "generate_assignment", assignment, "--force")
    return course_dir


def autograde(
    course_dir: Path,
    assignment: str,
    submissions: Mapping[str, Mapping],
    *,
    timeout: float | None = None,
) -> dict[str, list[CellGrade]]:
    """Autograde one notebook per student; return each student's cell grades.

    ``course_dir`` must come from :func:`prepare_course`. ``submissions`` maps a student
    id to the notebook they handed in. The autograded notebooks (with outputs) are left
    in ``course_dir/autograded/<student>/<assignment>/``.
    """
    from nbgrader.api import Gradebook  # slow to import; only needed here

    course_dir = Path(course_dir)
    for student, nb in submissions.items():
        folder = course_dir / "submitted" / student / assignment
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.write(nbformat.from_dict(copy.deepcopy(nb)), folder / f"{assignment}.ipynb")

    run_nbgrader(course_dir, "autograde", assignment, "--force", timeout=timeout)

    grades: dict[str, list[CellGrade]] = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        for student in submissions:
            notebook = gradebook.find_submission_notebook(assignment, assignment, student)
            grades[student] = [
                CellGrade(g.name, float(g.score), float(g.max_score)) for g in notebook.grades
            ]
    return grades
