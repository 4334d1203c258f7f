"""The outcome of grading one student's notebook, and the store that keeps them between runs.

Every student and notebook gets one :class:`Result` with a status. A score is given
whenever the notebook ran (even partly); a notebook that could not be graded has no
score at all, never a zero that would read as "graded and wrong".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "ERROR",
    "FLAGGED",
    "GRADED",
    "KERNEL_DIED",
    "NOT_SUBMITTED",
    "STATUSES",
    "TIMED_OUT",
    "UNREADABLE",
    "WRONG_NAME",
    "Result",
    "ResultStore",
]

GRADED = "graded"
FLAGGED = "flagged for review"
TIMED_OUT = "timed out"
KERNEL_DIED = "kernel died"
WRONG_NAME = "wrong file name"
UNREADABLE = "unreadable"
NOT_SUBMITTED = "not submitted"
ERROR = "grading error"

# Every status with what it means, as docs/GRADING.md and the summary explain them.
STATUSES = {
    GRADED: "ran to the end; the score is final",
    FLAGGED: "graded, but the code could change how its tests judge it: read it",
    TIMED_OUT: "a cell or the whole notebook ran too long; scored on what finished",
    KERNEL_DIED: "the kernel died or exited (memory, crash, exit()); scored on what ran",
    WRONG_NAME: "graded from a file whose name matches no notebook",
    UNREADABLE: "not a notebook that can be opened (empty, broken JSON); no score",
    NOT_SUBMITTED: "no file for this notebook; no score",
    ERROR: "the grader itself failed on this file; no score (see the log)",
}


@dataclass
class Result:
    """The outcome for one student and one notebook."""

    student: str
    notebook: str
    status: str
    score: float | None = None  # None: not graded (see status), never a stand-in zero
    max_score: float | None = None
    notes: list[str] = field(default_factory=list)
    handed_in_as: str = ""
    fingerprint: str = ""  # the file, the notebook's source and the settings it was graded with
    cells: dict[str, float] = field(default_factory=dict)  # grade id -> points earned
    seconds: float = 0.0
    feedback: str = ""  # path of the feedback page, relative to the output folder

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {list(STATUSES)}")

    @property
    def key(self) -> str:
        """``student/notebook``, the result's place in the store."""
        return f"{self.student}/{self.notebook}"


class ResultStore:
    """The results of every run, in one JSON file, so that a rerun replaces only what it grades."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.results: dict[str, Result] = {}
        if self.path.exists():
            for item in json.loads(self.path.read_text()):
                result = Result(**item)
                self.results[result.key] = result

    def get(self, student: str, notebook: str) -> Result | None:
        """The stored result of a student's notebook, or ``None``."""
        return self.results.get(f"{student}/{notebook}")

    def put(self, result: Result) -> None:
        """Store ``result``, replacing any earlier one for the same student and notebook."""
        self.results[result.key] = result

    def all(self) -> list[Result]:
        """Every stored result, by student then notebook."""
        return sorted(self.results.values(), key=lambda r: (r.student, r.notebook))

    def students(self) -> set[str]:
        """Every student with a stored result."""
        return {r.student for r in self.results.values()}

    def notebooks(self) -> set[str]:
        """Every notebook with a stored result."""
        return {r.notebook for r in self.results.values()}

    def save(self) -> None:
        """Write the store atomically (a crash leaves the previous file intact)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps([asdict(r) for r in self.all()], indent=1))
        os.replace(partial, self.path)

    def complete(self, students: Iterable[str], notebooks: Iterable[str]) -> list[Result]:
        """Every student and notebook, with a "not submitted" result where none is stored."""
        rows = []
        for student in sorted(set(students)):
            for notebook in sorted(set(notebooks)):
                found = self.get(student, notebook)
                rows.append(found or Result(student, notebook, NOT_SUBMITTED))
        return rows
