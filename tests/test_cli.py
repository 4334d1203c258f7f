"""The `course` command line."""

from __future__ import annotations

import subprocess
import sys

from course_lib.cli import build_parser, main


def test_help_lists_the_subcommands():
    text = build_parser().format_help()
    assert "release" in text


def test_release_refuses_an_unknown_notebook(capsys):
    assert main(["release", "99_no_such_notebook"]) == 2
    error = capsys.readouterr().err
    assert "no assignment named '99_no_such_notebook'" in error and "01_tokenization" in error


def test_release_outside_a_course_folder_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["release", "--root", str(tmp_path)]) == 2
    assert "no course folder" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "course_lib.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "release" in result.stdout
