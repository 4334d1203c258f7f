"""``course release``: generate the student notebooks from the instructor sources."""

from __future__ import annotations

import argparse
from pathlib import Path

from course_lib.release import find_course_root, release


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``course release``."""
    parser = subparsers.add_parser(
        "release",
        help="generate notebooks/ from solutions/ with nbgrader",
        description=(
            "Generate the student notebooks in notebooks/ from the instructor versions in "
            "solutions/. Solutions become `raise NotImplementedError()` and hidden tests "
            "are removed."
        ),
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="assignments to release, e.g. 01_tokenization"
    )
    parser.add_argument("--root", type=Path, help="the course folder (default: found from here)")
    parser.add_argument(
        "--out", type=Path, help="where to write the student folders (default: ROOT/notebooks)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root = find_course_root(args.root)
    written = release(args.names, root=root, out_dir=args.out)
    for path in written:
        print(f"wrote {path}")
    return 0
