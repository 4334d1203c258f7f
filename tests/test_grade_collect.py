"""Finding submissions: layouts, file names, duplicates and safe unpacking of archives."""

from __future__ import annotations

import os
import stat
import zipfile

import nbformat
import pytest

from course_lib.grading import collect as collect_module
from course_lib.grading.collect import (
    UnsafeArchive,
    collect,
    extract_zip,
    match_file_name,
    student_id,
)

NOTEBOOKS = ["01_tokenization", "02_embeddings", "10_output_head"]


def _notebook(*grade_ids: str) -> str:
    nb = nbformat.v4.new_notebook()
    for gid in grade_ids:
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["nbgrader"] = {"grade_id": gid, "solution": True}
        nb.cells.append(cell)
    return nbformat.writes(nb)


def _write(folder, files):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("alice_01_tokenization.ipynb", ("01_tokenization", "alice")),
        ("doe_jane_12345_01_tokenization-Copy1.ipynb", ("01_tokenization", "doe_jane_12345")),
        ("Bob Smith 01-Tokenization (2).ipynb", ("01_tokenization", "bob_smith")),
        ("carol_LATE_77_02_embeddings-1.ipynb", ("02_embeddings", "carol_77")),
        ("dan_output_head.ipynb", ("10_output_head", "dan")),
        ("01_tokenization.ipynb", ("01_tokenization", "")),
    ],
    ids=["plain", "lms-copy", "spaces-and-number", "late-resubmission", "topic-only", "bare"],
)
def test_file_names_are_matched_to_notebook_and_student(file_name, expected):
    notebook, prefix = match_file_name(file_name, NOTEBOOKS)
    assert (notebook, student_id(prefix)) == expected


@pytest.mark.parametrize("file_name", ["homework.ipynb", "alice_01_tokenization.py", "x.ipynb"])
def test_names_of_no_notebook_do_not_match(file_name):
    assert match_file_name(file_name, NOTEBOOKS) is None


def test_per_student_folders_flat_files_and_leftovers(tmp_path):
    source = _write(
        tmp_path / "in",
        {
            "alice/01_tokenization.ipynb": _notebook(),
            "alice/notes.txt": "stray",
            "bob/01_tokenization/01_tokenization.ipynb": _notebook(),
            "carol_02_embeddings.ipynb": _notebook(),
            "README.md": "not a submission",
            "zoe/.ipynb_checkpoints/01_tokenization-checkpoint.ipynb": _notebook(),
        },
    )
    found = collect(source, NOTEBOOKS, tmp_path / "staging")
    assert [(s.student, s.notebook) for s in found.submissions] == [
        ("alice", "01_tokenization"),
        ("bob", "01_tokenization"),
        ("carol", "02_embeddings"),
    ]
    skipped = {s.name: s.reason for s in found.skipped}
    assert set(skipped) == {"alice/notes.txt", "README.md"}
    assert "beside the notebook" in skipped["alice/notes.txt"]


def test_a_misnamed_notebook_is_recognised_by_its_cells(tmp_path):
    source = _write(
        tmp_path / "in",
        {
            "alice/Untitled.ipynb": _notebook("count_pairs", "merge"),
            "bob/homework.ipynb": _notebook("something_else"),
        },
    )
    ids = {"01_tokenization": {"count_pairs", "merge", "encode"}}
    found = collect(source, NOTEBOOKS, tmp_path / "staging", grade_ids=ids)
    (sub,) = found.submissions
    assert (sub.student, sub.notebook, sub.wrong_name) == ("alice", "01_tokenization", True)
    assert [s.name for s in found.skipped] == ["bob/homework.ipynb"]
    assert found.students == {"alice", "bob"}


def test_the_newest_of_several_copies_is_graded_and_the_others_listed(tmp_path):
    source = _write(
        tmp_path / "in",
        {
            "alice/01_tokenization.ipynb": _notebook(),
            "alice/01_tokenization-Copy1.ipynb": _notebook(),
        },
    )
    os.utime(source / "alice/01_tokenization.ipynb", (1_000, 1_000))
    found = collect(source, NOTEBOOKS, tmp_path / "staging")
    (sub,) = found.submissions
    assert sub.path.name == "01_tokenization-Copy1.ipynb"
    assert [s.name for s in found.skipped] == ["alice/01_tokenization.ipynb"]


def test_notebooks_not_graded_in_this_run_are_listed(tmp_path):
    source = _write(tmp_path / "in", {"alice/02_embeddings.ipynb": _notebook()})
    found = collect(source, NOTEBOOKS, tmp_path / "staging", only=["01_tokenization"])
    assert not found.submissions
    assert "not graded in this run" in found.skipped[0].reason


def test_a_zip_export_is_unpacked_and_collected(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("submissions/doe_jane_1_01_tokenization.ipynb", _notebook())
        zf.writestr("submissions/roe_rich_2_02_embeddings-Copy1.ipynb", _notebook())
    found = collect(archive, NOTEBOOKS, tmp_path / "staging")
    assert [(s.student, s.notebook) for s in found.submissions] == [
        ("doe_jane_1", "01_tokenization"),
        ("roe_rich_2", "02_embeddings"),
    ]


def test_unsafe_zip_members_are_left_out(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.ipynb", "x")
        zf.writestr("/etc/absolute.ipynb", "x")
        link = zipfile.ZipInfo("alice/link.ipynb")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("alice/01_tokenization.ipynb", _notebook())
    staging = tmp_path / "staging"
    skipped = extract_zip(archive, staging)
    assert {s.name for s in skipped} == {
        "../escaped.ipynb",
        "/etc/absolute.ipynb",
        "alice/link.ipynb",
    }
    assert not (tmp_path / "escaped.ipynb").exists()
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    assert files == ["alice/01_tokenization.ipynb"]


def test_zip_bombs_are_stopped_by_what_is_unpacked(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "MAX_MEMBER_BYTES", 10_000)
    monkeypatch.setattr(collect_module, "MAX_TOTAL_BYTES", 50_000)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("alice/big.ipynb", "0" * 20_000)
        for i in range(10):
            zf.writestr(f"bob/part{i}.ipynb", "0" * 9_000)
    with pytest.raises(UnsafeArchive, match="more than 50,000 bytes"):
        extract_zip(archive, tmp_path / "staging")


def test_an_oversized_member_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "MAX_MEMBER_BYTES", 10_000)
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("alice/01_tokenization.ipynb", "0" * 20_000)
    skipped = extract_zip(archive, tmp_path / "staging")
    assert "larger than" in skipped[0].reason
    assert not (tmp_path / "staging/alice/01_tokenization.ipynb").exists()


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_module, "MAX_MEMBERS", 3)
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4):
            zf.writestr(f"s{i}/01_tokenization.ipynb", "{}")
    with pytest.raises(UnsafeArchive, match="4 members"):
        extract_zip(archive, tmp_path / "staging")


def test_bad_input_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no submissions"):
        collect(tmp_path / "missing", NOTEBOOKS, tmp_path / "staging")
    text = tmp_path / "grades.txt"
    text.write_text("x")
    with pytest.raises(ValueError, match="folder or a .zip"):
        collect(text, NOTEBOOKS, tmp_path / "staging")
