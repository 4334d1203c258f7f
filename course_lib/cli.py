"""The ``course`` command: one entry point for the course's tools.

Each subcommand lives in its own module and registers itself through a function
``add_parser(subparsers)``; this module only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules that provide a subcommand, in the order `course --help` lists them.
SUBCOMMAND_MODULES = ("course_lib.cli_release", "course_lib.cli_train", "course_lib.cli_grade")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``course`` with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="course",
        description="Tools for the transformer course: release notebooks, grade, train.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``course`` with ``argv`` (default: the command line); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"course {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
