"""What the grading command shows and writes: the table, grades.csv and the summary."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from course_lib.grading.collect import Skipped
from course_lib.grading.results import STATUSES, Result

__all__ = ["CSV_COLUMNS", "format_table", "summary", "write_csv"]

CSV_COLUMNS = [
    "student",
    "notebook",
    "status",
    "score",
    "max_score",
    "notes",
    "handed_in_as",
    "feedback",
]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def write_csv(rows: Sequence[Result], path: Path) -> None:
    """Write one row per student and notebook; an ungraded row has an empty score."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row.student,
                    row.notebook,
                    row.status,
                    _number(row.score),
                    _number(row.max_score),
                    " | ".join(row.notes),
                    row.handed_in_as,
                    row.feedback,
                ]
            )


def format_table(rows: Sequence[Result]) -> str:
    """The end-of-run table: student, notebook, score out of maximum, status."""
    header = ("student", "notebook", "score", "status")
    lines = [
        (
            r.student,
            r.notebook,
            f"{_number(r.score)} / {_number(r.max_score)}" if r.score is not None else "-",
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]

    def fmt(values) -> str:
        return "  ".join(str(v).ljust(w) for v, w in zip(values, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def summary(rows: Sequence[Result], skipped: Sequence[Skipped]) -> str:
    """Counts per status with what each means, and the files that were not graded."""
    counts = Counter(r.status for r in rows)
    lines = [f"{counts[s]:4d}  {s}: {STATUSES[s]}" for s in STATUSES if counts[s]]
    if skipped:
        lines.append(f"{len(skipped)} file(s) not graded:")
        by_reason: dict[str, list[str]] = {}
        for item in skipped:
            by_reason.setdefault(item.reason, []).append(item.name)
        for reason, names in by_reason.items():
            if len(names) <= 3:
                lines += [f"      {name}: {reason}" for name in names]
            else:
                shown = ", ".join(names[:3])
                lines.append(f"      {len(names)} files ({shown}, ...): {reason}")
    return "\n".join(lines)
