"""Keeping the course's gradebook right while submissions are graded in parallel.

Each submission is autograded in a folder of its own with a gradebook of its own, so
parallel workers never write to the same SQLite file. The grading command then copies
each result into the course's gradebook, one at a time:

* the old submission is removed first, so a regrade never leaves a stale grade behind
  (also when the new run fails: then the student has no grade, and a status says why);
* scores a person entered (manual scores, extra credit, comments) are kept;
* after the batch, every score in the gradebook is compared with what the grader
  computed from the graded notebooks: any credit that neither came from the grader
  nor was entered by staff before the run is reported.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

__all__ = [
    "StaffEntry",
    "copy_submission",
    "gradebook_url",
    "make_template",
    "register_students",
    "remove_submission",
    "restore_scores",
    "staff_entries",
    "submission_scores",
    "total_scores",
]


@dataclass(frozen=True)
class StaffEntry:
    """What a person entered for one cell of one submission."""

    manual_score: float | None
    extra_credit: float | None
    manual_comment: str | None = None


@contextlib.contextmanager
def open_gradebook(url: str) -> Iterator[Gradebook]:
    """nbgrader's gradebook, without the SQLAlchemy warnings its own code triggers."""
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        with Gradebook(url) as gb:
            yield gb


def gradebook_url(course_dir: Path) -> str:
    """The SQLAlchemy address of a course folder's gradebook."""
    return f"sqlite:///{Path(course_dir) / 'gradebook.db'}"


def make_template(course_dir: Path, template: Path) -> None:
    """Copy the course's gradebook without its students: the start of each grading folder."""
    shutil.copyfile(Path(course_dir) / "gradebook.db", template)
    with open_gradebook(f"sqlite:///{template}") as gb:
        for student in list(gb.students):
            gb.remove_student(student.id)


def register_students(course_dir: Path, students: Iterable[str]) -> None:
    """Add every student to the course's gradebook (existing ones are left as they are)."""
    with open_gradebook(gradebook_url(course_dir)) as gb:
        known = {s.id for s in gb.students}
        for student in students:
            if student not in known:
                gb.update_or_create_student(student)


def _staff_data(gb: Gradebook, assignment: str, student: str) -> dict:
    """Scores and comments a person entered for one submission, by cell name."""
    try:
        submission = gb.find_submission(assignment, student)
    except MissingEntry:
        return {}
    entered = {}
    for notebook in submission.notebooks:
        for grade in notebook.grades:
            if grade.manual_score is not None or grade.extra_credit is not None:
                entered[("grade", notebook.name, grade.name)] = (
                    grade.manual_score,
                    grade.extra_credit,
                )
        for comment in notebook.comments:
            if comment.manual_comment:
                entered[("comment", notebook.name, comment.name)] = comment.manual_comment
    return entered


def remove_submission(course_dir: Path, assignment: str, student: str) -> None:
    """Remove a student's submission of ``assignment`` from the gradebook, if there is one."""
    with open_gradebook(gradebook_url(course_dir)) as gb:
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass


def copy_submission(course_dir: Path, job_dir: Path, assignment: str, student: str) -> None:
    """Replace the course gradebook's submission by the one autograded in ``job_dir``.

    Scores and comments that staff entered for the old submission are carried over to
    the same cells of the new one.
    """
    with open_gradebook(gradebook_url(job_dir)) as job:
        graded = job.find_submission(assignment, student)
        timestamp = graded.timestamp
        grades = {
            (nb.name, g.name): (g.auto_score, g.needs_manual_grade)
            for nb in graded.notebooks
            for g in nb.grades
        }
        comments = {
            (nb.name, c.name): c.auto_comment for nb in graded.notebooks for c in nb.comments
        }

    with open_gradebook(gradebook_url(course_dir)) as gb:
        gb.update_or_create_student(student)
        staff = _staff_data(gb, assignment, student)
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass
        submission = gb.add_submission(assignment, student, timestamp=timestamp)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                auto, needs_manual = grades.get((notebook.name, grade.name), (None, True))
                grade.auto_score = auto
                grade.needs_manual_grade = needs_manual
                entered = staff.get(("grade", notebook.name, grade.name))
                if entered is not None:
                    grade.manual_score, grade.extra_credit = entered
                    grade.needs_manual_grade = False
            for comment in notebook.comments:
                comment.auto_comment = comments.get((notebook.name, comment.name))
                comment.manual_comment = staff.get(("comment", notebook.name, comment.name))
        gb.db.commit()


def staff_entries(course_dir: Path) -> dict[tuple[str, str, str], StaffEntry]:
    """Every manual score or extra credit in the gradebook, by (student, notebook, cell)."""
    entries = {}
    with open_gradebook(gradebook_url(course_dir)) as gb:
        for assignment in gb.assignments:
            for submission in gb.assignment_submissions(assignment.name):
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        if grade.manual_score is not None or grade.extra_credit is not None:
                            key = (submission.student.id, notebook.name, grade.name)
                            entries[key] = StaffEntry(grade.manual_score, grade.extra_credit)
    return entries


def submission_scores(course_dir: Path) -> dict[tuple[str, str], dict[str, float | None]]:
    """The autograder's score of every cell in the gradebook, by (student, notebook)."""
    scores: dict[tuple[str, str], dict[str, float | None]] = {}
    with open_gradebook(gradebook_url(course_dir)) as gb:
        for assignment in gb.assignments:
            for submission in gb.assignment_submissions(assignment.name):
                for notebook in submission.notebooks:
                    key = (submission.student.id, notebook.name)
                    scores[key] = {g.name: g.auto_score for g in notebook.grades}
    return scores


def total_scores(course_dir: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """Each submitted notebook's score and maximum as the gradebook sums them.

    The score counts a manual score in place of the autograder's, plus extra credit,
    exactly as nbgrader's own reports do.
    """
    totals = {}
    with open_gradebook(gradebook_url(course_dir)) as gb:
        for assignment in gb.assignments:
            for submission in gb.assignment_submissions(assignment.name):
                for notebook in submission.notebooks:
                    key = (submission.student.id, notebook.name)
                    totals[key] = (float(notebook.score), float(notebook.max_score))
    return totals


def restore_scores(
    course_dir: Path,
    computed: dict[tuple[str, str], dict[str, float]],
    staff: dict[tuple[str, str, str], StaffEntry],
) -> dict[tuple[str, str], list[str]]:
    """Put back the grader's scores and the staff's entries wherever they were changed.

    Args:
        computed: for each (student, notebook), the autograder's score of each graded
            cell as the grader computed it from the graded notebook.
        staff: the manual scores and extra credit that existed before the run.

    Returns:
        For each (student, notebook) whose scores had been changed, what was changed, in
        words; empty when the gradebook was right.
    """
    changed: dict[tuple[str, str], list[str]] = {}
    with open_gradebook(gradebook_url(course_dir)) as gb:
        for assignment in gb.assignments:
            for submission in gb.assignment_submissions(assignment.name):
                for notebook in submission.notebooks:
                    key = (submission.student.id, notebook.name)
                    if key not in computed:
                        continue
                    for grade in notebook.grades:
                        entry = staff.get((*key, grade.name), StaffEntry(None, None))
                        have = (grade.auto_score, grade.manual_score, grade.extra_credit)
                        want = (
                            computed[key].get(grade.name),
                            entry.manual_score,
                            entry.extra_credit,
                        )
                        if have != want:
                            changed.setdefault(key, []).append(
                                f"{grade.name}: found {have}, restored {want}"
                            )
                            grade.auto_score, grade.manual_score, grade.extra_credit = want
        gb.db.commit()
    return changed
