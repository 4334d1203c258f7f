"""How fast ``course grade`` grades a class: seconds per notebook, with 1 and 2 workers.

    python benchmarks/bench_grade.py                  # 30 students, notebook 01, 1 and 2 workers
    python benchmarks/bench_grade.py --students 10 --workers 2

The class is built from the real notebook as students hand it in: a third complete, a
third half done, a third untouched. Each run grades the whole class from scratch into
a fresh output folder (release generation included, as an instructor's first run), in
the sandbox when bubblewrap is available. Figures are printed, one line per run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat

from course_lib.grading import samples
from course_lib.grading.collect import collect
from course_lib.grading.results import GRADED
from course_lib.grading.runner import ClassGrader, Settings
from course_lib.release import find_course_root


def build_class(root: Path, notebook: str, students: int, folder: Path) -> None:
    """Write ``students`` submissions: complete, partial and blank in turn."""
    kinds = [samples.complete(root, notebook), samples.partial(root, notebook)]
    kinds.append(samples.blank(root, notebook))
    for i in range(students):
        path = folder / f"student{i:03d}" / f"{notebook}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(kinds[i % 3], str(path))


def run(root: Path, notebook: str, folder: Path, workers: int) -> dict:
    """Grade the class once; return the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as out:
        grader = ClassGrader(root, Path(out), Settings(workers=workers))
        started = time.perf_counter()
        grader.prepare([notebook])
        found = collect(folder, grader.available(), Path(out) / "staging", only=[notebook])
        graded_from = time.perf_counter()
        results = grader.grade(found, [notebook])
        finished = time.perf_counter()
    if any(r.status != GRADED for r in results):
        raise RuntimeError(f"not every submission was graded: {[r.status for r in results]}")
    return {
        "sandboxed": grader.sandboxed,
        "total": finished - started,
        "grading": finished - graded_from,
        "per_notebook": (finished - graded_from) / len(results),
        "per_job": sum(r.seconds for r in results) / len(results),
        "students": len(results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--notebook", default="01_tokenization")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    root = find_course_root()

    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        folder = Path(tmp)
        build_class(root, args.notebook, args.students, folder)
        print(f"{args.students} students, {args.notebook}, {os.cpu_count()} CPU cores")
        for workers in args.workers:
            load = os.getloadavg()[0]
            figures = run(root, args.notebook, folder, workers)
            print(
                f"workers {workers}: {figures['grading']:.0f} s for the class "
                f"({figures['total']:.0f} s with release), "
                f"{figures['per_notebook']:.1f} s per notebook, "
                f"{60 / figures['per_notebook']:.1f} notebooks/min; "
                f"each submission {figures['per_job']:.1f} s from start to end; "
                f"sandbox {'on' if figures['sandboxed'] else 'off'}; "
                f"load average before {load:.1f}"
            )


if __name__ == "__main__":
    main()
