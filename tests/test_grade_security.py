"""What a submission can reach while it is graded, and what happens if it cheats.

In the sandbox a submission tries to read the hidden tests and the gradebook, to
change grades and to reach the network; every attempt must fail while it and an
honest student are graded right. Without the sandbox a submission that does change
the gradebook must be caught: the credit it gave is undone and flagged.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import pytest

from course_lib.grading import gradebook
from course_lib.grading.results import FLAGGED, GRADED
from course_lib.grading.runner import Settings
from course_lib.grading.sandbox import Limits, SandboxSpec, kernel_command, sandbox_status
from tests.test_grade_support import (
    EXERCISES,
    NOTEBOOK,
    ROOT,
    TEST_SETTINGS,
    TOTAL,
    as_data,
    from_data,
    grade,
    graded_notebook,
    outputs_text,
    shared,
    solved,
    with_answer_code,
    write_class,
)

FIRST = EXERCISES[0]
SANDBOX, WHY_NOT = sandbox_status()


def test_the_kernel_command_goes_through_the_launcher_with_safe_paths():
    spec = SandboxSpec("/w", "/r", Limits(memory_mb=512), sandboxed=True, slot=1)
    command = kernel_command([sys.executable, "-m", "ipykernel_launcher", "-f", "c.json"], spec)
    assert command[:4] == [sys.executable, "-P", "-m", "course_lib.grading.sandbox"]
    assert SandboxSpec.from_json(command[4]) == spec
    assert command[5:9] == ["--", sys.executable, "-P", "-m"]


def test_the_sandbox_status_says_why_when_it_is_missing():
    available, reason = sandbox_status()
    assert isinstance(available, bool) and reason


PROBE = """
import json, os, socket, sqlite3, sys
report = {{}}
for name, path in {paths!r}.items():
    try:
        with open(path, "rb") as handle:
            handle.read(16)
        report["read " + name] = "read"
    except OSError as error:
        report["read " + name] = type(error).__name__
for name, path in {databases!r}.items():
    try:
        db = sqlite3.connect(f"file:{{path}}?mode=rw", uri=True)
        db.execute("update grade set auto_score = 99, manual_score = 99")
        db.commit()
        report["write " + name] = "wrote"
    except Exception as error:
        report["write " + name] = type(error).__name__
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    report["network"] = "connected"
except OSError as error:
    report["network"] = type(error).__name__
with open("/proc/net/dev") as handle:
    report["interfaces"] = sorted(l.split(":")[0].strip() for l in handle.readlines()[2:])
report["cwd on sys.path"] = "" in sys.path or os.getcwd() in sys.path
print("PROBE " + json.dumps(report))
"""


class _Listener:
    """A TCP server on the grader's loopback, that a sandboxed kernel must not reach."""

    def __enter__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        try:
            while True:
                self.server.accept()[0].close()
                self.accepted += 1
        except OSError:
            return

    def __exit__(self, *exc):
        self.server.close()


def _grade_intruder(folder) -> dict:
    out = folder / "out"
    course = out / "course"
    job = out / "work" / f"intruder--{NOTEBOOK}"
    paths = {
        "solutions": str(ROOT / "solutions" / NOTEBOOK / f"{NOTEBOOK}.ipynb"),
        "course source": str(course / "source" / NOTEBOOK / f"{NOTEBOOK}.ipynb"),
        "grading-folder source": str(job / "source" / NOTEBOOK / f"{NOTEBOOK}.ipynb"),
        "gradebook": str(course / "gradebook.db"),
        "grading-folder gradebook": str(job / "gradebook.db"),
        "other student": str(course / "submitted" / "honest" / NOTEBOOK / f"{NOTEBOOK}.ipynb"),
        "results": str(out / "results.json"),
    }
    databases = {k: v for k, v in paths.items() if "gradebook" in k}
    with _Listener() as listener:
        probe = PROBE.format(
            paths=paths, databases=databases, port=listener.server.getsockname()[1]
        )
        files = {
            f"honest/{NOTEBOOK}.ipynb": solved(),
            f"intruder/{NOTEBOOK}.ipynb": with_answer_code(solved(), FIRST, probe),
        }
        settings = Settings(**{**vars(TEST_SETTINGS), "workers": 1})
        results, _, _ = grade(write_class(folder / "class", files), out, settings)
        accepted = listener.accepted
    text = outputs_text(graded_notebook(out, "intruder"), FIRST)
    report = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
    totals = gradebook.total_scores(course)
    return {
        "results": as_data(results),
        "report": report,
        "accepted": accepted,
        "totals": {k[0]: list(v) for k, v in totals.items()},
    }


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    if not SANDBOX:
        pytest.skip(f"no sandbox here: {WHY_NOT}")
    data = shared(tmp_path_factory, "intruder", _grade_intruder)
    return from_data(data["results"]), data


def test_a_sandboxed_submission_cannot_read_hidden_tests_or_grades(sandboxed):
    report = sandboxed[1]["report"]
    reads = {k: v for k, v in report.items() if k.startswith("read ")}
    assert reads and all(v in ("FileNotFoundError", "PermissionError") for v in reads.values())


def test_a_sandboxed_submission_cannot_change_any_grade(sandboxed):
    results, data = sandboxed
    writes = {k: v for k, v in data["report"].items() if k.startswith("write ")}
    assert writes and "wrote" not in writes.values()
    for student in ("honest", "intruder"):
        assert (results[student].status, results[student].score) == (GRADED, TOTAL)
    assert data["totals"]["honest"] == data["totals"]["intruder"] == [TOTAL, TOTAL]


def test_a_sandboxed_submission_has_no_network(sandboxed):
    data = sandboxed[1]
    assert data["report"]["network"] != "connected" and data["accepted"] == 0
    assert data["report"]["interfaces"] == ["lo"]


def test_the_submissions_folder_is_not_on_the_import_path(sandboxed):
    assert sandboxed[1]["report"]["cwd on sys.path"] is False


TAMPER = """
import sqlite3
db = sqlite3.connect({gradebook!r})
db.execute("update grade set auto_score = 99")
db.execute("update grade set extra_credit = 5")
db.commit()
"""


def _grade_tamperer(folder) -> dict:
    out = folder / "out"
    tamper = TAMPER.format(gradebook=str(out / "course" / "gradebook.db"))
    files = {
        f"alice/{NOTEBOOK}.ipynb": solved(EXERCISES[:1]),
        f"mallory/{NOTEBOOK}.ipynb": with_answer_code(solved([]), FIRST, tamper),
    }
    settings = Settings(**{**vars(TEST_SETTINGS), "workers": 1, "sandbox": False})
    results, _, _ = grade(write_class(folder / "class", files), out, settings)
    totals = gradebook.total_scores(out / "course")
    return {"results": as_data(results), "totals": {k[0]: list(v) for k, v in totals.items()}}


def test_credit_that_staff_did_not_enter_is_undone_and_flagged(tmp_path_factory):
    data = shared(tmp_path_factory, "tamperer", _grade_tamperer)
    results = from_data(data["results"])
    # alice, graded first, had her grade raised while mallory's notebook ran.
    assert (results["alice"].status, results["alice"].score) == (FLAGGED, 3.0)
    assert any("did not enter" in note for note in results["alice"].notes)
    assert (results["mallory"].status, results["mallory"].score) == (FLAGGED, 0.0)
    assert any("being graded when" in note for note in results["mallory"].notes)
    assert data["totals"] == {"alice": [3.0, TOTAL], "mallory": [0.0, TOTAL]}
