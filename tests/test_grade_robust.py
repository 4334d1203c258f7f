"""Grading what students really hand in: every bad submission graded in one batch.

One batch holds two honest submissions and one student per kind of bad submission.
Each test checks one bad submission's outcome, and every test also checks that the
honest students were graded exactly right, so no bad file can spoil the batch. A
second run then regrades two students and must replace their results without
touching anyone else's.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import gradebook
from course_lib.grading.results import (
    GRADED,
    KERNEL_DIED,
    NOT_SUBMITTED,
    TIMED_OUT,
    UNREADABLE,
    WRONG_NAME,
)
from course_lib.grading.runner import Settings
from tests.test_grade_support import (
    EXERCISES,
    NOTEBOOK,
    TEST_SETTINGS,
    TOTAL,
    as_data,
    cell,
    from_data,
    grade,
    graded_notebook,
    outputs_text,
    points,
    shared,
    solved,
    with_answer_code,
    write_class,
)

pytestmark = pytest.mark.slow

FIRST = EXERCISES[0]
LAST = EXERCISES[-1]
THIRD = EXERCISES[2]

# A process name no other program on the machine carries.
MARKER = f"grading-test-orphan-{os.getpid()}"


def _old_format():
    """The complete notebook saved in nbformat 3, as very old Jupyter versions did."""
    nb = solved()
    for c in nb.cells:
        c.pop("id", None)
    return nbformat.writes(nbformat.convert(nb, 3), version=3)


def _newer_format():
    """The complete notebook claiming a future minor version, with fields we do not know."""
    data = json.loads(nbformat.writes(solved()))
    data["nbformat_minor"] = 99
    data["metadata"]["future_field"] = {"x": 1}
    for c in data["cells"]:
        c["future_cell_field"] = True
    return json.dumps(data)


def _unknown_schema():
    nb = solved()
    for c in nb.cells:
        if "nbgrader" in c.metadata:
            c.metadata.nbgrader.schema_version = 99
            c.metadata.nbgrader["future_key"] = "?"
    return nb


def _deleted_cells():
    """The complete notebook with one answer cell and every visible check deleted."""
    nb = solved()
    nb.cells = [
        c
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade_id") != FIRST
        and not c.metadata.get("nbgrader", {}).get("grade_id", "").endswith("-check")
    ]
    return nb


def _duplicated_cells():
    """Copies of an answer cell and of a test cell (same grade ids twice)."""
    nb = solved()
    answer, check = cell(nb, FIRST), cell(nb, f"{FIRST}-check")
    at = nb.cells.index(check)
    nb.cells.insert(at + 1, copy.deepcopy(check))
    nb.cells.insert(nb.cells.index(answer) + 1, copy.deepcopy(answer))
    return nb


def _edited_tests():
    """Nothing solved, every test cell replaced by `pass` and worth 100 points."""
    nb = solved([])
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade"):
            c.source = "pass"
            meta["points"] = 100
    return nb


def _markdown_answer():
    nb = solved()
    answer = cell(nb, FIRST)
    answer.cell_type = "markdown"
    for key in ("outputs", "execution_count"):
        answer.pop(key, None)
    return nb


HOG = """
hoard = []
try:
    while True:
        hoard.append(bytearray(64 * 2**20))
finally:
    print(f"allocated {len(hoard) * 64} MiB before the limit")
    del hoard
"""

BACKGROUND = f"""
import subprocess, sys
sleeper = "import time; time.sleep(900)"
subprocess.Popen([sys.executable, "-c", sleeper, "{MARKER}"], start_new_session=True)
subprocess.Popen(["sh", "-c", f"nohup {{sys.executable}} -c '{{sleeper}}' {MARKER} >/dev/null &"])
"""

STDERR = f"""
import sys
import warnings

_{FIRST}_reference = {FIRST}


def {FIRST}(*args, **kwargs):
    warnings.warn("this warning goes to stderr while the tests run")
    print("debugging output on stderr", file=sys.stderr)
    return _{FIRST}_reference(*args, **kwargs)
"""

IGNORES_INTERRUPT = """
import signal
import time
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    time.sleep(0.1)
"""

BIG_OUTPUT = """
print("x" * 30_000_000)
for i in range(300_000):
    print(i)
"""

# student -> (file name in the student's folder, content)
CLASS = {
    "honest_complete": (f"{NOTEBOOK}.ipynb", lambda: solved()),
    "honest_first": (f"{NOTEBOOK}.ipynb", lambda: solved(EXERCISES[:1])),
    "invalid_json": (f"{NOTEBOOK}.ipynb", lambda: nbformat.writes(solved())[:5000]),
    "empty_file": (f"{NOTEBOOK}.ipynb", lambda: b""),
    "old_format": (f"{NOTEBOOK}.ipynb", _old_format),
    "newer_format": (f"{NOTEBOOK}.ipynb", _newer_format),
    "unknown_schema": (f"{NOTEBOOK}.ipynb", _unknown_schema),
    "deleted_cells": (f"{NOTEBOOK}.ipynb", _deleted_cells),
    "duplicated_cells": (f"{NOTEBOOK}.ipynb", _duplicated_cells),
    "edited_tests": (f"{NOTEBOOK}.ipynb", _edited_tests),
    "markdown_answer": (f"{NOTEBOOK}.ipynb", _markdown_answer),
    "renamed_copy": (f"{NOTEBOOK}-Copy1.ipynb", lambda: solved()),
    "misnamed": ("Untitled.ipynb", lambda: solved()),
    "infinite_loop": (
        f"{NOTEBOOK}.ipynb",
        lambda: with_answer_code(solved(), FIRST, "while True:\n    pass", before=True),
    ),
    "slow_cell": (
        f"{NOTEBOOK}.ipynb",
        lambda: with_answer_code(solved(), FIRST, "import time\ntime.sleep(600)", before=True),
    ),
    "ignores_interrupt": (
        f"{NOTEBOOK}.ipynb",
        lambda: with_answer_code(solved(), LAST, IGNORES_INTERRUPT, before=True),
    ),
    "memory_hog": (f"{NOTEBOOK}.ipynb", lambda: with_answer_code(solved(), FIRST, HOG)),
    "kernel_exit": (
        f"{NOTEBOOK}.ipynb",
        lambda: with_answer_code(solved(), THIRD, "import os\nos._exit(3)"),
    ),
    "big_output": (f"{NOTEBOOK}.ipynb", lambda: with_answer_code(solved(), FIRST, BIG_OUTPUT)),
    "background": (f"{NOTEBOOK}.ipynb", lambda: with_answer_code(solved(), FIRST, BACKGROUND)),
    "stderr_warning": (f"{NOTEBOOK}.ipynb", lambda: with_answer_code(solved(), FIRST, STDERR)),
    "extra_files": (f"{NOTEBOOK}.ipynb", lambda: solved()),
}

# Files handed in beside the notebook, named like what the kernel imports.
TRAP = "open({path!r}, 'w').write('ran'); raise SystemExit('a handed-in module ran')\n"


def _grade_batch(folder: Path) -> dict:
    """Grade the class; the second run regrades two students in the same output folder."""
    out, marker = folder / "out", folder / "trap-ran"
    files = {f"{student}/{name}": make() for student, (name, make) in CLASS.items()}
    for module in ("torch.py", "ipykernel_launcher.py", "course_lib/__init__.py"):
        files[f"extra_files/{module}"] = TRAP.format(path=str(marker))
    results, _, found = grade(write_class(folder / "class", files), out)
    batch = {
        "results": as_data(results),
        "skipped": [s.name for s in found.skipped],
        "trap_ran": marker.exists(),
        "out": str(out),
    }

    # Staff give renamed_copy extra credit by hand before the second run.
    url = gradebook.gradebook_url(out / "course")
    with gradebook.open_gradebook(url) as gb:
        gb.find_grade(f"{FIRST}-check", NOTEBOOK, NOTEBOOK, "renamed_copy").extra_credit = 2
        gb.db.commit()

    # The kernel dies at once: plain nbgrader kept the old full grade in this case.
    before = gradebook.total_scores(out / "course")
    resubmitted = {
        f"honest_complete/{NOTEBOOK}.ipynb": with_answer_code(
            solved(), FIRST, "import os\nos._exit(9)", before=True
        ),
        f"honest_first/{NOTEBOOK}.ipynb": b"",
        f"renamed_copy/{NOTEBOOK}.ipynb": solved(),
    }
    regraded, grader, _ = grade(write_class(folder / "resubmitted", resubmitted), out)
    after = gradebook.total_scores(out / "course")
    rows = grader.store.complete(grader.store.students(), [NOTEBOOK])
    batch["regrade"] = {
        "results": as_data(regraded),
        "before": {k[0]: list(v) for k, v in before.items()},
        "after": {k[0]: list(v) for k, v in after.items()},
        "rows": {r.student: r.status for r in rows},
    }
    return batch


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    data = shared(tmp_path_factory, "robust", _grade_batch)
    return from_data(data["results"]), data


def _honest_students_graded_right(results) -> None:
    assert results["honest_complete"].status == GRADED
    assert results["honest_complete"].score == results["honest_complete"].max_score == TOTAL
    assert results["honest_first"].status == GRADED
    assert results["honest_first"].score == points(FIRST)


def test_every_student_gets_a_result(batch):
    results, _ = batch
    assert set(results) == set(CLASS)
    _honest_students_graded_right(results)


@pytest.mark.parametrize("student", ["invalid_json", "empty_file"])
def test_unreadable_files_get_a_status_and_no_score(batch, student):
    results, _ = batch
    assert results[student].status == UNREADABLE
    assert results[student].score is None
    _honest_students_graded_right(results)


@pytest.mark.parametrize("student", ["old_format", "newer_format", "unknown_schema"])
def test_other_formats_and_schemas_are_graded_in_full(batch, student):
    results, _ = batch
    assert results[student].status == GRADED, results[student].notes
    assert results[student].score == TOTAL
    _honest_students_graded_right(results)


def test_deleted_cells_are_restored_and_the_deleted_answer_earns_nothing(batch):
    results, _ = batch
    result = results["deleted_cells"]
    assert result.max_score == TOTAL
    assert result.score == TOTAL - points(FIRST)
    assert any(f"restored deleted cell {FIRST}-check" in n for n in result.notes)
    _honest_students_graded_right(results)


def test_copied_graded_cells_do_not_abort_the_batch(batch):
    results, _ = batch
    result = results["duplicated_cells"]
    assert result.status == GRADED
    assert result.score == TOTAL
    assert any("copy" in note for note in result.notes)
    _honest_students_graded_right(results)


def test_edited_tests_and_points_are_restored_from_the_source(batch):
    results, _ = batch
    result = results["edited_tests"]
    assert (result.score, result.max_score) == (0, TOTAL)
    _honest_students_graded_right(results)


def test_an_answer_turned_into_markdown_is_graded_as_code(batch):
    results, _ = batch
    assert results["markdown_answer"].score == TOTAL
    assert any("markdown" in note for note in results["markdown_answer"].notes)
    _honest_students_graded_right(results)


def test_a_file_renamed_by_the_notebook_app_is_recognised(batch):
    results, _ = batch
    result = results["renamed_copy"]
    assert (result.status, result.score) == (GRADED, TOTAL)
    assert result.handed_in_as.endswith("-Copy1.ipynb")
    _honest_students_graded_right(results)


def test_a_misnamed_notebook_is_graded_and_its_name_reported(batch):
    results, _ = batch
    result = results["misnamed"]
    assert (result.status, result.score) == (WRONG_NAME, TOTAL)
    assert any("Untitled.ipynb" in note for note in result.notes)
    _honest_students_graded_right(results)


@pytest.mark.parametrize("student", ["infinite_loop", "slow_cell"])
def test_a_cell_past_its_timeout_is_stopped_and_the_rest_graded(batch, student):
    results, _ = batch
    result = results[student]
    assert result.status == TIMED_OUT
    assert result.score == TOTAL - points(FIRST)
    _honest_students_graded_right(results)


def _grade_over_budget(folder: Path) -> dict:
    """A notebook whose cell would sleep for ten minutes, under a budget of a minute."""
    files = {
        f"sleeper/{NOTEBOOK}.ipynb": with_answer_code(
            solved(), FIRST, "import time\ntime.sleep(600)", before=True
        )
    }
    settings = Settings(**{**vars(TEST_SETTINGS), "cell_timeout": 900, "budget": 60})
    results, _, _ = grade(write_class(folder / "class", files), folder / "out", settings)
    return as_data(results)


def test_the_whole_notebook_is_stopped_at_its_budget(tmp_path_factory):
    result = from_data(shared(tmp_path_factory, "budget", _grade_over_budget))["sleeper"]
    assert result.status == TIMED_OUT
    assert any("budget of 60 s" in note for note in result.notes)
    assert result.seconds < 300  # stopped by the budget, long before the cell's timeout
    assert result.score == 0


def test_code_that_ignores_the_interrupt_is_stopped(batch):
    results, data = batch
    out = Path(data["out"])
    result = results["ignores_interrupt"]
    assert result.status == TIMED_OUT
    # Everything before the stuck cell counts; nothing after it ran.
    assert result.score == TOTAL - points(LAST)
    nb = graded_notebook(out, "ignores_interrupt")
    assert "CellNotRun" in outputs_text(nb, f"{LAST}-check")
    _honest_students_graded_right(results)


def test_memory_exhaustion_hits_the_cap_not_the_machine(batch):
    results, data = batch
    out = Path(data["out"])
    result = results["memory_hog"]
    text = outputs_text(graded_notebook(out, "memory_hog"), FIRST)
    assert "MemoryError" in text
    allocated = int(text.split("allocated ")[1].split()[0])
    assert allocated <= 1536
    assert (result.status, result.score) == (GRADED, TOTAL)
    _honest_students_graded_right(results)


def test_a_kernel_that_exits_is_reported_and_scored_on_what_ran(batch):
    results, _ = batch
    result = results["kernel_exit"]
    assert result.status == KERNEL_DIED
    assert result.score == points(*EXERCISES[:2])
    _honest_students_graded_right(results)


def test_huge_outputs_are_cut(batch):
    results, data = batch
    out = Path(data["out"])
    result = results["big_output"]
    assert result.score == TOTAL
    assert any("output cut" in note for note in result.notes)
    graded = out / "course" / "autograded" / "big_output" / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    assert graded.stat().st_size < 5_000_000
    _honest_students_graded_right(results)


def test_no_background_process_outlives_its_grading(batch):
    results, _ = batch
    assert results["background"].score == TOTAL
    survivors = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if MARKER.encode() in cmdline.read_bytes():
                survivors.append(cmdline.parent.name)
        except OSError:
            continue
    assert not survivors, f"processes left running: {survivors}"
    _honest_students_graded_right(results)


def test_warnings_on_stderr_cost_no_points(batch):
    results, data = batch
    out = Path(data["out"])
    result = results["stderr_warning"]
    assert (result.status, result.score) == (GRADED, TOTAL)
    check = cell(graded_notebook(out, "stderr_warning"), f"{FIRST}-check")
    assert any(o.get("name") == "stderr" for o in check.outputs), "stderr kept for the reader"
    _honest_students_graded_right(results)


def test_files_handed_in_beside_the_notebook_never_run(batch):
    results, data = batch
    assert (results["extra_files"].status, results["extra_files"].score) == (GRADED, TOTAL)
    assert not data["trap_ran"]
    listed = set(data["skipped"])
    assert {"extra_files/torch.py", "extra_files/ipykernel_launcher.py"} <= listed
    _honest_students_graded_right(results)


# ----------------------------------------------------------------------------------------------
# A second run in the same output folder
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regraded(batch):
    _, data = batch
    regrade = data["regrade"]
    return from_data(regrade["results"]), regrade


def test_a_regrade_replaces_the_old_grade_even_when_the_kernel_dies(regraded):
    results, regrade = regraded
    result = results["honest_complete"]
    assert (result.status, result.score) == (KERNEL_DIED, 0)
    assert regrade["before"]["honest_complete"] == [TOTAL, TOTAL]
    assert regrade["after"]["honest_complete"] == [0.0, TOTAL]


def test_a_regrade_that_cannot_grade_leaves_no_stale_grade(regraded):
    results, regrade = regraded
    assert results["honest_first"].status == UNREADABLE
    assert "honest_first" in regrade["before"] and "honest_first" not in regrade["after"]


def test_a_regrade_keeps_what_staff_entered(regraded):
    results, regrade = regraded
    assert regrade["before"]["renamed_copy"] == [TOTAL + 2, TOTAL]
    assert (results["renamed_copy"].status, results["renamed_copy"].score) == (GRADED, TOTAL + 2)
    assert regrade["after"]["renamed_copy"] == [TOTAL + 2, TOTAL]


def test_a_regrade_keeps_every_other_students_grade(regraded):
    _, regrade = regraded
    regraded_now = ("honest_complete", "honest_first", "renamed_copy")
    others = {s: v for s, v in regrade["before"].items() if s not in regraded_now}
    assert others and all(regrade["after"][s] == v for s, v in others.items())
    assert set(regrade["rows"]) == set(CLASS)
    assert NOT_SUBMITTED not in regrade["rows"].values()
