"""Helpers shared by the notebook tests: locating notebooks and running their cells.

Graded cells are run in-process against known wrong implementations: the instructor
notebook is executed once, then each exercise's test cells are run again in a copy of
its namespace where the learner's definition is replaced by a mistake.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import nbformat

from course_lib.autograde import grade_id
from course_lib.release import list_assignments

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
ASSIGNMENTS = list_assignments(SOLUTIONS)


def solution_path(assignment: str) -> Path:
    return SOLUTIONS / assignment / f"{assignment}.ipynb"


def student_path(assignment: str) -> Path:
    return NOTEBOOKS / assignment / f"{assignment}.ipynb"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def exercises_module(assignment: str) -> ModuleType:
    """The ``course_lib.exercises`` module that holds an assignment's checks."""
    return importlib.import_module(f"course_lib.exercises.{assignment[3:]}")


@dataclass
class CellResult:
    grade_id: str
    error: BaseException | None
    output: str

    @property
    def text(self) -> str:
        """The error's message with its notes, as a learner would read it."""
        if self.error is None:
            return ""
        notes = "\n".join(getattr(self.error, "__notes__", []))
        return f"{type(self.error).__name__}: {self.error}\n{notes}"


def execute_in_process(path: Path) -> dict:
    """Run every code cell of a notebook in one namespace; return the namespace."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = read(path)
    namespace: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(
                line for line in cell.source.splitlines() if not line.lstrip().startswith("%")
            )
            with contextlib.redirect_stdout(io.StringIO()):
                exec(
                    compile(source, f"<cell {grade_id(cell) or cell.get('id')}>", "exec"),
                    namespace,
                )
    finally:
        os.chdir(cwd)
        import matplotlib.pyplot as plt

        plt.close("all")
    return namespace


def graded_cells(path: Path, exercise: str) -> list[tuple[str, str]]:
    """The (grade id, source) of the test cells that grade ``exercise``."""
    nb = read(path)
    found = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id", "").rsplit("-", 1)[0] == exercise:
            found.append((meta["grade_id"], cell.source))
    return found


def run_graded(namespace: dict, path: Path, exercise: str, overrides: dict) -> list[CellResult]:
    """Run ``exercise``'s test cells in a copy of ``namespace`` with ``overrides`` applied."""
    results = []
    for gid, source in graded_cells(path, exercise):
        scope = dict(namespace)
        scope.update(overrides)
        out = io.StringIO()
        error = None
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(source, f"<cell {gid}>", "exec"), scope)
            except Exception as exc:  # a failed graded cell, whatever the error
                error = exc
        results.append(CellResult(gid, error, out.getvalue()))
    return results
