"""Build the demo class that ``course grade --demo`` grades: python examples/make_demo.py

Every submission is generated from the course's real notebooks
(:mod:`course_lib.grading.samples`), so the demo shows what grading the current
notebooks looks like. Rerun this script after a notebook changes, and commit the result.

The class hands in the first two notebooks, so that grading it takes a few minutes; one
folder per student:

* alice hands in both notebooks complete;
* bob hands in both notebooks half done;
* carol hands in the first notebook untouched, and nothing else;
* dave's upload of the first notebook was cut off, so it is not valid JSON; the repository
  keeps only valid notebooks, so ``course grade --demo`` writes that file into its copy of
  the class each time it runs (``course_lib.cli_grade.DEMO_BROKEN``);
* erin hands in the first notebook complete, under the name the notebook app gave
  her copy (``-Copy1``), with a stray file beside it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nbformat

from course_lib.grading import samples
from course_lib.release import find_course_root, list_assignments

# How many of the course's notebooks (the first ones) the demo class hands in.
DEMO_NOTEBOOKS = 2


def build(root: Path, out: Path) -> list[Path]:
    """Write the demo class under ``out`` (replaced); return the files written."""
    notebooks = [
        name
        for name in list_assignments(root / "solutions")
        if (root / "notebooks" / name / f"{name}.ipynb").is_file()  # released to students
    ]
    if not notebooks:
        raise ValueError(f"no released notebooks in {root / 'notebooks'}")
    notebooks = notebooks[:DEMO_NOTEBOOKS]
    if out.exists():
        shutil.rmtree(out)
    first = notebooks[0]
    files: dict[Path, str] = {}
    for name in notebooks:
        files[out / "alice" / f"{name}.ipynb"] = nbformat.writes(samples.complete(root, name))
        files[out / "bob" / f"{name}.ipynb"] = nbformat.writes(samples.partial(root, name))
    files[out / "carol" / f"{first}.ipynb"] = nbformat.writes(samples.blank(root, first))
    files[out / "erin" / f"{first}-Copy1.ipynb"] = nbformat.writes(samples.complete(root, first))
    files[out / "erin" / "scratch.txt"] = "notes I meant to delete before handing in\n"
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return sorted(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="the course folder (default: found from here)")
    parser.add_argument("--out", type=Path, help="default: ROOT/examples/demo_class")
    args = parser.parse_args()
    root = find_course_root(args.root)
    out = args.out or root / "examples" / "demo_class"
    for path in build(root, out):
        print(f"wrote {path.relative_to(out.parent)}")


if __name__ == "__main__":
    main()
