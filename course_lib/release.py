"""Generating the student notebooks from the instructor sources with nbgrader.

The instructor version of each notebook lives in ``solutions/NN_topic/NN_topic.ipynb``:
it holds the solutions between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` and the
hidden tests between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``. nbgrader's
``generate_assignment`` turns it into the student version, which is written to
``notebooks/NN_topic/``. The student notebooks are never edited by hand: a test fails
when they differ from what :func:`release` generates.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ASSIGNMENT_PATTERN",
    "NbgraderError",
    "find_course_root",
    "list_assignments",
    "make_course_dir",
    "release",
    "run_nbgrader",
]

logger = logging.getLogger(__name__)

# An assignment folder is two digits, an underscore and a lowercase topic.
ASSIGNMENT_PATTERN = re.compile(r"^\d\d_[a-z0-9_]+$")

# The stub that replaces each solution region in the student version.
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"

# Seconds one cell may run before nbgrader stops it while autograding.
CELL_TIMEOUT = 600


class NbgraderError(RuntimeError):
    """An nbgrader command failed; the message holds its output."""


def find_course_root(start: Path | None = None) -> Path:
    """Return the folder that holds ``solutions/`` and ``course_lib/``.

    With ``start``, that folder must be it. Without, the current folder and its parents
    are searched, then the folder the installed package came from.
    """
    if start is not None:
        candidates = [Path(start).resolve()]
    else:
        here = Path.cwd().resolve()
        candidates = [here, *here.parents, Path(__file__).resolve().parents[1]]
    for folder in candidates:
        if (folder / "solutions").is_dir() and (folder / "course_lib").is_dir():
            return folder
    raise FileNotFoundError(
        f"no course folder (one holding solutions/ and course_lib/) at {candidates[0]}"
        + ("" if start is not None else " or above it")
        + "; run the command from the course's checkout or pass --root"
    )


def list_assignments(solutions_dir: Path) -> list[str]:
    """Return the assignment names in ``solutions_dir``, in order."""
    names = []
    for folder in sorted(Path(solutions_dir).iterdir()):
        if folder.is_dir() and ASSIGNMENT_PATTERN.match(folder.name):
            if (folder / f"{folder.name}.ipynb").is_file():
                names.append(folder.name)
    return names


def _config_text(course_dir: Path, extra: str = "") -> str:
    """The nbgrader configuration shared by releasing and grading."""
    return (
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course_dir)!r}\n"
        "c.CourseDirectory.course_id = 'transformer-course'\n"
        f"c.ClearSolutions.code_stub = {{'python': {CODE_STUB!r}}}\n"
        f"c.Execute.timeout = {CELL_TIMEOUT}\n"
        "c.Execute.interrupt_on_timeout = True\n"
        "c.OverwriteCells.add_missing_cells = True\n" + extra
    )


def make_course_dir(
    course_dir: Path, solutions_dir: Path, names: Sequence[str], extra_config: str = ""
) -> Path:
    """Lay out an nbgrader course folder whose ``source/`` holds the named assignments."""
    course_dir = Path(course_dir)
    course_dir.mkdir(parents=True, exist_ok=True)
    (course_dir / "nbgrader_config.py").write_text(_config_text(course_dir, extra_config))
    for name in names:
        target = course_dir / "source" / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(
            Path(solutions_dir) / name,
            target,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
    return course_dir


def run_nbgrader(course_dir: Path, *args: str, timeout: float | None = None) -> str:
    """Run an nbgrader subcommand inside ``course_dir``; return its output."""
    command = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader runs helper programs (alembic, jupyter) by name, so this Python's
    # scripts folder must come first on PATH even when the environment is not activated.
    scripts = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        PATH=scripts + os.pathsep + os.environ.get("PATH", ""),
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )
    # One math thread per kernel unless asked otherwise: several kernels (parallel graders,
    # parallel tests) on a few cores run far slower when each spawns a thread per core.
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(
        command,
        cwd=course_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 or " ERROR]" in output:
        raise NbgraderError(f"`nbgrader {' '.join(args)}` failed:\n{output}")
    return output


def release(
    names: Sequence[str] | None = None,
    *,
    root: Path | None = None,
    out_dir: Path | None = None,
) -> list[Path]:
    """Generate the student notebooks from ``solutions/``; return the files written.

    Args:
        names: assignments to release (e.g. ``["01_tokenization"]``); all when ``None``.
        root: the course folder; found from the current folder when ``None``.
        out_dir: where the student folders go; ``<root>/notebooks`` when ``None``.

    Each ``out_dir/NN_topic/`` folder is replaced by the freshly generated one.
    """
    root = find_course_root(root)
    solutions_dir = root / "solutions"
    out_dir = Path(out_dir) if out_dir is not None else root / "notebooks"
    available = list_assignments(solutions_dir)
    names = list(names) if names else available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"no assignment named {unknown[0]!r}; expected one of {available}")

    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp:
        course_dir = make_course_dir(Path(tmp), solutions_dir, names)
        for name in names:
            logger.info("generating the student version of %s", name)
            run_nbgrader(course_dir, "generate_assignment", name, "--force")
            generated = course_dir / "release" / name
            target = out_dir / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(generated, target)
            written += sorted(p for p in target.rglob("*") if p.is_file())
    return written
