"""Shared set-up for the grading tests (this module holds no tests of its own).

Submissions are built from the real student notebook of 01_tokenization, solved with
the instructor's answers where a test needs working code, then spoiled the way
students really spoil them.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import nbformat
import pytest
from nbformat import NotebookNode

from course_lib.autograde import exercise_ids, exercise_points, fill_solutions, grade_id
from course_lib.grading.collect import collect
from course_lib.grading.results import Result
from course_lib.grading.runner import ClassGrader, Settings
from course_lib.grading.sandbox import Limits
from course_lib.release import list_assignments

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_tokenization"

if NOTEBOOK not in list_assignments(ROOT / "solutions"):
    pytest.skip(f"the grading tests need solutions/{NOTEBOOK}", allow_module_level=True)

SOURCE = nbformat.read(str(ROOT / "solutions" / NOTEBOOK / f"{NOTEBOOK}.ipynb"), 4)
STUDENT = nbformat.read(str(ROOT / "notebooks" / NOTEBOOK / f"{NOTEBOOK}.ipynb"), 4)
EXERCISES = exercise_ids(SOURCE)
TOTAL = sum(exercise_points(SOURCE, e) for e in EXERCISES)

# Small limits keep the tests quick; the longest honest cell of 01 takes a few seconds.
TEST_SETTINGS = Settings(
    cell_timeout=20, budget=240, workers=2, limits=Limits(memory_mb=1536), regrade=True
)


def points(*exercises: str) -> float:
    """The points of the named exercises."""
    return sum(exercise_points(SOURCE, e) for e in exercises)


def solved(exercises=None) -> NotebookNode:
    """The student notebook with ``exercises`` (default: all) solved by the instructor."""
    return fill_solutions(STUDENT, SOURCE, EXERCISES if exercises is None else exercises)


def cell(nb: NotebookNode, gid: str) -> NotebookNode:
    """The cell with grade id ``gid``."""
    return next(c for c in nb.cells if grade_id(c) == gid)


def with_answer_code(nb: NotebookNode, exercise: str, code: str, before: bool = False):
    """A copy of ``nb`` with ``code`` added after (or before) an answer cell's code."""
    nb = copy.deepcopy(nb)
    answer = cell(nb, exercise)
    answer.source = f"{code}\n{answer.source}" if before else f"{answer.source}\n{code}"
    return nb


def write_class(folder: Path, files: Mapping[str, NotebookNode | str | bytes]) -> Path:
    """Write ``{relative path: notebook or raw content}`` under ``folder``."""
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            # Written as is: some test notebooks are invalid on purpose (copied cell ids).
            path.write_text(json.dumps(content, indent=1))
    return folder


def grade(
    submissions: Path, out: Path, settings: Settings = TEST_SETTINGS
) -> tuple[dict[str, Result], ClassGrader, object]:
    """Grade a class of 01 submissions; return the results by student, the grader and
    what was collected."""
    grader = ClassGrader(ROOT, out, settings)
    grader.prepare([NOTEBOOK])
    found = collect(
        submissions, grader.available(), out / "staging", grader.grade_ids([NOTEBOOK]), [NOTEBOOK]
    )
    results = grader.grade(found, [NOTEBOOK])
    return {r.student: r for r in results}, grader, found


def graded_notebook(out: Path, student: str) -> NotebookNode:
    """The notebook as nbgrader graded it, with its outputs."""
    path = out / "course" / "autograded" / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    return nbformat.read(str(path), 4)


def outputs_text(nb: NotebookNode, gid: str) -> str:
    """All text a cell printed, error names and messages included."""
    parts = []
    for out in cell(nb, gid).get("outputs", []):
        parts.append(out.get("text", "") or "")
        if out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
    return "\n".join(parts)


def shared(tmp_path_factory, name: str, compute: Callable[[Path], dict]) -> dict:
    """Compute an expensive fixture's data once per test run, even across xdist workers.

    ``compute(folder)`` grades into ``folder`` and returns JSON-serialisable data. Under
    pytest-xdist the first worker to need it computes it while the others wait, then
    read what it saved; tests of one module may run on different workers.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return compute(tmp_path_factory.mktemp(name))
    import fcntl

    root = tmp_path_factory.getbasetemp().parent
    saved = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if saved.exists():
            return json.loads(saved.read_text())
        data = compute(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)))
        saved.write_text(json.dumps(data))
        return data


def as_data(results: Mapping[str, Result]) -> dict:
    """Results in a form that :func:`shared` can save."""
    return {student: asdict(result) for student, result in results.items()}


def from_data(data: Mapping[str, dict]) -> dict[str, Result]:
    """Results saved by :func:`as_data`."""
    return {student: Result(**fields) for student, fields in data.items()}
