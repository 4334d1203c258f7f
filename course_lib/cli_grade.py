"""``course grade``: autograde a class's submissions with nbgrader, safely and in parallel.

See docs/GRADING.md for the whole flow (release, collect, grade, feedback, export).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from course_lib.grading import samples
from course_lib.grading.collect import collect, match_file_name
from course_lib.grading.report import format_table, summary, write_csv
from course_lib.grading.runner import ClassGrader, Settings
from course_lib.grading.sandbox import Limits
from course_lib.release import find_course_root

# The bundled demo class, relative to the course folder.
DEMO_CLASS = Path("examples") / "demo_class"
# The demo student whose upload was cut off, and the notebook it cut off. A file that is
# not valid JSON cannot be kept among the repository's notebooks, so it is written into a
# copy of the class each time the demo is graded.
DEMO_BROKEN = ("dave", "01_tokenization")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``course grade``."""
    parser = subparsers.add_parser(
        "grade",
        help="autograde submissions with nbgrader; write grades.csv and feedback",
        description=(
            "Autograde the notebooks in SUBMISSIONS (a folder with one sub-folder per "
            "student, a flat folder of STUDENT_NOTEBOOK.ipynb files, or a zip archive "
            "exported by a learning-management system). Each kernel runs in a sandbox "
            "when bubblewrap is available. Writes OUT/grades.csv, OUT/feedback/ and an "
            "nbgrader course folder OUT/course/ whose gradebook is kept between runs."
        ),
    )
    parser.add_argument(
        "submissions",
        nargs="?",
        type=Path,
        metavar="SUBMISSIONS",
        help="a folder of submissions or a zip archive of them (not needed with --demo)",
    )
    parser.add_argument(
        "--notebook",
        action="append",
        metavar="NAME",
        help="grade only this notebook (repeatable; default: every notebook in solutions/)",
    )
    parser.add_argument("--workers", type=int, default=1, help="submissions graded at once")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: ROOT/grading, ROOT/grading/demo)"
    )
    parser.add_argument("--root", type=Path, help="the course folder (default: found from here)")
    parser.add_argument(
        "--timeout", type=int, default=300, help="seconds one cell may run (default 300)"
    )
    parser.add_argument(
        "--budget", type=float, default=1800, help="seconds one notebook may run (default 1800)"
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=Limits.memory_mb,
        help=f"address space per kernel process, in MiB (default {Limits.memory_mb})",
    )
    parser.add_argument(
        "--show-hidden",
        action="store_true",
        help="show hidden tests in feedback (only once submissions are closed)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run student code without the sandbox, with your rights (trusted code only)",
    )
    parser.add_argument(
        "--regrade", action="store_true", help="grade again files already graded unchanged"
    )
    parser.add_argument(
        "--demo", action="store_true", help="grade the bundled example class (examples/)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root = find_course_root(args.root)
    if args.demo:
        out = args.out or root / "grading" / "demo"
        submissions = _demo_class(root, out / "demo_class")
    elif args.submissions is None:
        raise ValueError("name the SUBMISSIONS folder or zip archive, or use --demo")
    else:
        submissions = args.submissions
        out = args.out or root / "grading"
    settings = Settings(
        cell_timeout=args.timeout,
        budget=args.budget,
        workers=args.workers,
        limits=Limits(memory_mb=args.memory),
        sandbox=False if args.no_sandbox else None,
        show_hidden=args.show_hidden,
        regrade=args.regrade,
    )
    grader = ClassGrader(root, out, settings)
    if grader.sandboxed:
        print("sandbox: each kernel runs in bubblewrap (no network, no course files)")
    else:
        print(
            "WARNING: grading UNSANDBOXED: student code runs with your user's rights and can "
            "read and change your files, the gradebook included "
            f"({'--no-sandbox' if args.no_sandbox else grader.sandbox_reason}). "
            "See docs/GRADING.md.",
            file=sys.stderr,
        )

    # Release, collect, grade (the demo: the notebooks its class handed in).
    notebooks = args.notebook or grader.available()
    if args.demo and not args.notebook:
        handed_in = (match_file_name(p.name, notebooks) for p in submissions.rglob("*.ipynb"))
        notebooks = sorted({found[0] for found in handed_in if found})
    grader.prepare(notebooks)
    everything = grader.available()
    found = collect(
        submissions, everything, out / "staging", grader.grade_ids(notebooks), only=notebooks
    )
    started = time.monotonic()
    results = grader.grade(found, notebooks, progress=_progress_bar(len(found.submissions)))
    seconds = time.monotonic() - started

    # Export and report: every student and notebook, ungraded ones with their status.
    store = grader.store
    rows = store.complete(store.students() | found.students, store.notebooks() | set(notebooks))
    write_csv(rows, out / "grades.csv")
    print(format_table(rows))
    print()
    print(summary(rows, found.skipped))
    ran = [r for r in results if r.seconds]
    if ran:
        print(
            f"graded {len(ran)} notebook(s) in {seconds:.0f} s with {settings.workers} "
            f"worker(s), {sum(r.seconds for r in ran) / len(ran):.1f} s each"
        )
    print(f"grades: {out / 'grades.csv'}")
    print(f"feedback: {out / 'feedback'}")
    return 0


def _demo_class(root: Path, folder: Path) -> Path:
    """Copy the bundled demo class to ``folder`` (replaced) with the cut-off upload added."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(root / DEMO_CLASS, folder)
    student, notebook = DEMO_BROKEN
    (folder / student).mkdir(exist_ok=True)
    (folder / student / f"{notebook}.ipynb").write_text(samples.broken(root, notebook))
    return folder


def _progress_bar(total: int):
    """A callback that advances a progress bar on stderr by one finished submission."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="grading", unit="notebook", file=sys.stderr, leave=False)

    def advance(result) -> None:
        bar.set_postfix_str(f"{result.student} {result.notebook}: {result.status}")
        bar.update()
        if bar.n >= bar.total:
            bar.close()

    return advance
