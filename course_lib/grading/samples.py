"""Sample submissions built from the course's real notebooks.

The bundled demo class (``examples/demo_class``) and the grading tests use them, so
that both exercise the notebooks students really receive: the complete one is the
released notebook with every answer the instructor's, the partial one with the first
half, the blank one as released, and the broken one cut off mid-file, as an
interrupted upload leaves it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat import NotebookNode

from course_lib.autograde import exercise_ids, fill_solutions

__all__ = ["blank", "broken", "complete", "partial", "read_notebooks"]


def read_notebooks(root: Path, notebook: str) -> tuple[NotebookNode, NotebookNode]:
    """The instructor's and the students' version of ``notebook`` under the course ``root``."""
    root = Path(root)
    source = nbformat.read(str(root / "solutions" / notebook / f"{notebook}.ipynb"), 4)
    student = nbformat.read(str(root / "notebooks" / notebook / f"{notebook}.ipynb"), 4)
    return source, student


def complete(root: Path, notebook: str) -> NotebookNode:
    """The student notebook with every exercise solved as the instructor solved it."""
    source, student = read_notebooks(root, notebook)
    return fill_solutions(student, source, exercise_ids(source))


def partial(root: Path, notebook: str) -> NotebookNode:
    """The student notebook with the first half of its exercises (at least one) solved."""
    source, student = read_notebooks(root, notebook)
    exercises = exercise_ids(source)
    return fill_solutions(student, source, exercises[: max(1, len(exercises) // 2)])


def blank(root: Path, notebook: str) -> NotebookNode:
    """The student notebook as released, nothing solved."""
    return read_notebooks(root, notebook)[1]


def broken(root: Path, notebook: str) -> str:
    """The text of a complete notebook cut off at two thirds: not valid JSON."""
    text = nbformat.writes(complete(root, notebook))
    return text[: 2 * len(text) // 3]
