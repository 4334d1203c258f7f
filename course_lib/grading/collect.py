"""Finding the submissions in what students and learning-management systems hand in.

Three layouts are understood, and may be mixed:

* one folder per student (``alice/01_tokenization.ipynb``, also deeper, as nbgrader's
  ``submitted/alice/01_tokenization/`` or Moodle's ``Alice Smith_123_.../``): the student
  is the folder's name;
* a flat folder of files named ``<student>_<notebook>.ipynb``, as exported by Canvas
  (``doe_jane_12345_01_tokenization-Copy1.ipynb``): the student is everything before
  the notebook's name;
* a zip archive holding either layout, unpacked safely into a staging folder.

A notebook is recognised by its name, ignoring case, spaces and hyphens, and the
suffixes that notebook apps and download tools add (``-Copy1``, `` (1)``, ``-2``,
``_late``). A notebook in a student's folder whose name matches no notebook is
recognised by its graded cells instead, and reported as a wrong file name. Every file
that is not graded is listed with the reason, never silently dropped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "Collection",
    "Skipped",
    "Submission",
    "UnsafeArchive",
    "collect",
    "extract_zip",
    "match_file_name",
    "student_id",
]

# Limits on what a zip archive may unpack to.
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 200 * 2**20
MAX_TOTAL_BYTES = 2 * 2**30

# Folders that tools create beside the real work.
_IGNORED_FOLDERS = {"__MACOSX", ".ipynb_checkpoints", "__pycache__", ".git"}

# Suffixes added to a file name by notebook apps, browsers and course platforms.
_COPY_SUFFIX = re.compile(r"(?:[-_ ]copy\d*|\s*\(\d+\)|-\d{1,3}|[-_ ]late)+$", re.IGNORECASE)
_LATE_MARK = re.compile(r"(?:^|_)late(?=_|$)", re.IGNORECASE)


class UnsafeArchive(ValueError):
    """A zip archive that cannot be unpacked safely as a whole."""


@dataclass(frozen=True)
class Submission:
    """One notebook handed in by one student."""

    student: str
    notebook: str  # the assignment's name, e.g. "01_tokenization"
    path: Path  # the file to grade
    handed_in_as: str  # the file's name as handed in, relative to the submissions
    wrong_name: bool = False  # recognised by its cells, not by its name
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """A file that is not graded, and why."""

    name: str
    reason: str


@dataclass
class Collection:
    """What was found: the submissions, the files left out and every student seen."""

    submissions: list[Submission] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    students: set[str] = field(default_factory=set)


def student_id(text: str) -> str:
    """Turn a folder or file-name prefix into a student id nbgrader accepts.

    >>> student_id("Doe, Jane (12345)")
    'doe_jane_12345'
    """
    text = _LATE_MARK.sub("", text.strip())
    text = re.sub(r"[^a-z0-9.-]+", "_", text.lower())
    return re.sub(r"_+", "_", text).strip("._-")


def _normal(text: str) -> str:
    return re.sub(r"[\s-]+", "_", text.lower())


def match_file_name(file_name: str, notebooks: Sequence[str]) -> tuple[str, str] | None:
    """Return ``(notebook, prefix)`` for a notebook file's name, or ``None``.

    ``prefix`` is what comes before the notebook's name (the student, in a flat folder).
    The full name (``01_tokenization``) is preferred; the topic alone (``tokenization``)
    is accepted when no other notebook shares it.

    >>> match_file_name("doe_jane_12345_01_tokenization-Copy1.ipynb", ["01_tokenization"])
    ('01_tokenization', 'doe_jane_12345_')
    """
    if not file_name.lower().endswith(".ipynb"):
        return None
    stem = _COPY_SUFFIX.sub("", file_name[: -len(".ipynb")])
    normal = _normal(stem)
    for notebook in sorted(notebooks, key=len, reverse=True):
        if normal.endswith(notebook):
            return notebook, stem[: len(stem) - len(notebook)]
    topics = {nb.split("_", 1)[1]: nb for nb in notebooks if "_" in nb}
    for topic, notebook in sorted(topics.items(), key=lambda item: -len(item[0])):
        if not normal.endswith(topic):
            continue
        shared = [nb for nb in notebooks if nb.endswith("_" + topic)]
        boundary = len(normal) == len(topic) or not normal[-len(topic) - 1].isalnum()
        if boundary and len(shared) == 1:
            return notebook, stem[: len(stem) - len(topic)]
    return None


def _identify(path: Path, grade_ids: Mapping[str, set[str]]) -> str | None:
    """The notebook whose graded cells this file holds (at least half of them), if any."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
        cells = data.get("cells") or [
            cell for sheet in data.get("worksheets", []) for cell in sheet.get("cells", [])
        ]
        found = {
            cell["metadata"]["nbgrader"]["grade_id"]
            for cell in cells
            if isinstance(cell, dict)
            and isinstance(cell.get("metadata", {}).get("nbgrader"), dict)
            and "grade_id" in cell["metadata"]["nbgrader"]
        }
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None
    best, overlap = None, 0.0
    for notebook, ids in grade_ids.items():
        share = len(found & ids) / max(len(ids), 1)
        if share > overlap:
            best, overlap = notebook, share
    return best if overlap >= 0.5 else None


# ----------------------------------------------------------------------------------------------
# Unpacking archives
# ----------------------------------------------------------------------------------------------


def extract_zip(archive: Path, target: Path) -> list[Skipped]:
    """Unpack ``archive`` into the empty folder ``target``; return the members left out.

    Members with absolute paths, ``..`` components, links or devices are left out, as
    are members over ``MAX_MEMBER_BYTES``. An archive with more than ``MAX_MEMBERS``
    members or more than ``MAX_TOTAL_BYTES`` in all raises :class:`UnsafeArchive`:
    sizes are counted while unpacking, not taken from the archive's own claims.
    """
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    root = target.resolve()
    skipped: list[Skipped] = []
    total = 0
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnsafeArchive(f"{archive} is not a readable zip archive: {error}") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise UnsafeArchive(f"{archive} has {len(members)} members; at most {MAX_MEMBERS}")
        for info in members:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                continue
            if name.startswith("/") or ".." in parts or ":" in name or "\0" in name:
                skipped.append(Skipped(name, "unsafe path in the archive (absolute or '..')"))
                continue
            if kind and kind != stat.S_IFREG:
                skipped.append(Skipped(name, "not a regular file (a link or device)"))
                continue
            destination = (root / Path(*parts)).resolve()
            if not destination.is_relative_to(root):
                skipped.append(Skipped(name, "unsafe path in the archive"))
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as source, open(destination, "wb") as sink:
                while chunk := source.read(2**20):
                    written += len(chunk)
                    total += len(chunk)
                    if total > MAX_TOTAL_BYTES:
                        raise UnsafeArchive(
                            f"{archive} unpacks to more than {MAX_TOTAL_BYTES:,} bytes"
                        )
                    if written > MAX_MEMBER_BYTES:
                        break
                    sink.write(chunk)
            if written > MAX_MEMBER_BYTES:
                destination.unlink()
                skipped.append(Skipped(name, f"larger than {MAX_MEMBER_BYTES:,} bytes"))
                continue
            modified = _zip_time(info)
            if modified is not None:
                os.utime(destination, (modified, modified))
    return skipped


def _zip_time(info: zipfile.ZipInfo) -> float | None:
    """A member's modification time, which tells the newest of several copies."""
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# Walking the submissions
# ----------------------------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    """Files under ``folder``, leaving out tool folders and hidden files."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part in _IGNORED_FOLDERS or part.startswith(".") for part in relative):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def collect(
    source: Path,
    notebooks: Sequence[str],
    staging: Path,
    grade_ids: Mapping[str, set[str]] | None = None,
    only: Sequence[str] | None = None,
) -> Collection:
    """Find every submission of ``notebooks`` in ``source`` (a folder or a zip archive).

    Args:
        source: the folder or ``.zip`` file as handed in.
        notebooks: the course's notebooks, e.g. ``["01_tokenization", "02_embeddings"]``.
        staging: an empty folder for unpacking archives (replaced if it exists).
        grade_ids: each notebook's grade ids, to recognise a wrongly named notebook in
            a student's folder by its cells.
        only: the notebooks graded in this run; files of the others are listed as
            skipped. Default: all of ``notebooks``.

    Returns:
        The submissions (one per student and notebook: the newest file when a student
        handed in several), the files left out with the reason, and every student seen.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no submissions at {source}")
    collection = Collection()
    if source.is_file():
        if source.suffix.lower() != ".zip":
            raise ValueError(f"expected a folder or a .zip archive of submissions, got {source}")
        collection.skipped += extract_zip(source, staging)
        source = staging
        entries = [p for p in source.iterdir() if p.name not in _IGNORED_FOLDERS]
        if len(entries) == 1 and entries[0].is_dir():
            source = entries[0]  # an archive of one folder that holds everything

    candidates: list[Submission] = []
    for path in _files(source):
        relative = path.relative_to(source)
        name = relative.as_posix()
        if len(relative.parts) == 1:
            found = _flat_file(path, name, notebooks)
        else:
            student = student_id(relative.parts[0])
            if student:
                collection.students.add(student)
            found = _student_file(path, name, student, notebooks, grade_ids or {})
        if isinstance(found, Skipped):
            collection.skipped.append(found)
        else:
            collection.students.add(found.student)
            candidates.append(found)

    # One file per student and notebook: the newest, an exact name breaking ties.
    by_key: dict[tuple[str, str], list[Submission]] = {}
    for sub in candidates:
        by_key.setdefault((sub.student, sub.notebook), []).append(sub)
    for group in by_key.values():
        group.sort(
            key=lambda s: (
                s.path.stat().st_mtime,
                not s.wrong_name,
                s.path.name == f"{s.notebook}.ipynb",
            ),
            reverse=True,
        )
        chosen, *others = group
        if only is not None and chosen.notebook not in only:
            for sub in group:
                collection.skipped.append(
                    Skipped(sub.handed_in_as, "its notebook is not graded in this run")
                )
            continue
        collection.submissions.append(chosen)
        for other in others:
            collection.skipped.append(
                Skipped(other.handed_in_as, f"older than {chosen.handed_in_as}, which is graded")
            )
    collection.submissions.sort(key=lambda s: (s.student, s.notebook))
    return collection


def _flat_file(path: Path, name: str, notebooks: Sequence[str]) -> Submission | Skipped:
    if path.suffix.lower() == ".zip":
        return Skipped(name, "an archive inside the submissions: unpack it and grade again")
    if path.suffix.lower() != ".ipynb":
        return Skipped(name, "not a notebook, and not in a student's folder")
    matched = match_file_name(path.name, notebooks)
    if matched is None:
        return Skipped(name, f"the name matches none of the notebooks {list(notebooks)}")
    notebook, prefix = matched
    student = student_id(prefix)
    if not student:
        return Skipped(name, "no student name before the notebook's name")
    return Submission(student, notebook, path, name, notes=_renamed_note(path.name, notebook))


def _student_file(
    path: Path,
    name: str,
    student: str,
    notebooks: Sequence[str],
    grade_ids: Mapping[str, set[str]],
) -> Submission | Skipped:
    if not student:
        return Skipped(name, "the folder's name gives no student id")
    if path.suffix.lower() == ".zip":
        return Skipped(name, "an archive inside the submissions: unpack it and grade again")
    if path.suffix.lower() != ".ipynb":
        return Skipped(name, "handed in beside the notebook; not used for grading")
    matched = match_file_name(path.name, notebooks)
    if matched is not None:
        notebook = matched[0]
        return Submission(student, notebook, path, name, notes=_renamed_note(path.name, notebook))
    notebook = _identify(path, grade_ids)
    if notebook is None:
        return Skipped(name, f"the name matches none of the notebooks {list(notebooks)}")
    note = f"handed in as {path.name}; its cells are those of {notebook}"
    return Submission(student, notebook, path, name, wrong_name=True, notes=(note,))


def _renamed_note(file_name: str, notebook: str) -> tuple[str, ...]:
    """A note when the name carries a suffix such as ``-Copy1`` that was ignored."""
    if _COPY_SUFFIX.search(file_name[: -len(".ipynb")]):
        return (f"handed in as {file_name}",)
    return ()
