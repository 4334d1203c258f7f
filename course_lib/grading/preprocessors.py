"""nbgrader preprocessors that make autograding robust to what students hand in.

* :class:`GuardedExecute` runs the notebook like nbgrader's ``Execute``, in a sandboxed
  kernel, but survives what would abort nbgrader's run: a kernel that dies or exits, a
  cell that ignores the interrupt after its timeout, a notebook over its wall-clock
  budget, or a flood of output. The cells it could not run get an error output, so
  that their tests earn nothing (nbgrader counts a test cell without an error as
  passed). What happened is written to a small JSON file for the grading command.
* :class:`SetAsideStderr` and :class:`RestoreStderr` surround ``SaveAutoGrades``: a
  test cell passes or fails by raising, so text on stderr (a library's warning) must
  not fail it, as it would in nbgrader. The text stays in the graded notebook.
* :class:`HideHiddenTests` prepares feedback: it removes the hidden tests from the
  sources, like nbgrader's ``ClearHiddenTests``, and also from the outputs, where a
  failing test's traceback would quote its lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, Execute, NbGraderPreprocessor
from nbgrader.utils import is_grade
from traitlets import Float, Integer, Unicode

from course_lib.grading.kernel import SandboxKernelManager

__all__ = [
    "STDERR_KEY",
    "GuardedExecute",
    "HideHiddenTests",
    "RestoreStderr",
    "SetAsideStderr",
]

# Cell metadata key under which stderr outputs wait while grades are saved.
STDERR_KEY = "course_grading_stderr"

# The longest error message or traceback line kept from a failing cell.
_ERROR_CHARS = 4000


class _OverBudget(Exception):
    """The notebook used up its wall-clock budget."""


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(
        output_type="error",
        ename=ename,
        evalue=evalue,
        traceback=[f"\x1b[0;31m{ename}\x1b[0m: {evalue}"],
    )


def _output_size(msg: dict) -> int:
    """Bytes of text an output message carries."""
    content = msg.get("content", {})
    if "text" in content:
        return len(content["text"])
    return len(json.dumps(content.get("data", {}))) + len(json.dumps(content.get("traceback", [])))


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with a sandboxed kernel, a budget and recovery from failures."""

    budget = Float(
        900.0, config=True, help="Wall-clock seconds the whole notebook may take to run."
    )
    max_output_bytes = Integer(
        1_000_000, config=True, help="Output one cell may keep; the rest is dropped."
    )
    outcome_file = Unicode(
        "", config=True, help="JSON file that receives the outcome of the execution."
    )

    def __init__(self, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(**kwargs)

    # -- the whole notebook ------------------------------------------------------------------

    def preprocess(self, nb, resources=None, km=None):
        """Run every cell; whatever stops the kernel, return the notebook with its outputs."""
        started = time.monotonic()
        self._deadline = started + self.budget
        self._index = 0
        self._timed_out: list[int] = []
        self._sizes: dict[int, int] = {}
        self._dropped: dict[int, int] = {}
        status, detail = "complete", ""
        try:
            nb, resources = super().preprocess(nb, resources, km=km)
        except DeadKernelError:
            status = "kernel died"
            detail = "the kernel died or exited (out of memory, a crash, or exit())"
        except (CellTimeoutError, _OverBudget) as error:
            status = "timed out"
            detail = (
                f"the notebook ran past its budget of {self.budget:g} s"
                if isinstance(error, _OverBudget)
                else f"a cell ran past {self.timeout} s and did not stop when interrupted"
            )
        except RuntimeError as error:  # the kernel could not start or stopped answering
            status = "kernel died"
            detail = f"the kernel stopped responding: {str(error)[:300]}"
        stopped = status != "complete"
        if stopped:
            self._mark_not_run(self.nb, status, detail)
            nb = self.nb
        elif self._timed_out:
            status = "timed out"
            detail = f"{len(self._timed_out)} cell(s) ran past {self.timeout} s and were stopped"
            if time.monotonic() > self._deadline:
                detail = f"the notebook ran past its budget of {self.budget:g} s"
        self._write_outcome(
            {
                "status": status,
                "detail": detail,
                "stopped_at_cell": self._index if stopped else None,
                "timed_out_cells": self._timed_out,
                "truncated_cells": sorted(self._dropped),
                "seconds": round(time.monotonic() - started, 2),
            }
        )
        return nb, resources

    def _mark_not_run(self, nb: NotebookNode, status: str, detail: str) -> None:
        """Give the cell that failed, and every code cell after it, an error output."""
        for index in range(self._index, len(nb.cells)):
            cell = nb.cells[index]
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if index == self._index:
                ename = "DeadKernelError" if status == "kernel died" else "CellTimeoutError"
                cell.setdefault("outputs", []).append(_error(ename, detail))
            else:
                cell.outputs = [_error("CellNotRun", f"not run: {detail}")]

    def _write_outcome(self, outcome: dict) -> None:
        if self.outcome_file:
            Path(self.outcome_file).write_text(json.dumps(outcome, indent=1))

    # -- one cell ----------------------------------------------------------------------------

    def preprocess_cell(self, cell, resources, index):
        """Run one cell, unless the notebook's budget is spent."""
        self._index = index
        if cell.cell_type == "code" and time.monotonic() > self._deadline:
            raise _OverBudget()
        return super().preprocess_cell(cell, resources, index)

    def _get_timeout(self, cell):
        """The cell's timeout, shortened to what is left of the budget."""
        timeout = super()._get_timeout(cell)
        remaining = max(1, int(self._deadline - time.monotonic()) + 1)
        return remaining if timeout is None else min(timeout, remaining)

    async def _async_handle_timeout(self, timeout, cell=None):
        """Remember which cell timed out, then interrupt it as nbgrader does."""
        if self._index not in self._timed_out:
            self._timed_out.append(self._index)
        return await super()._async_handle_timeout(timeout, cell)

    def output(self, outs, msg, display_id, cell_index):
        """Keep an output unless the cell has already printed ``max_output_bytes``."""
        size = _output_size(msg)
        used = self._sizes.get(cell_index, 0)
        if used + size > self.max_output_bytes:
            if cell_index not in self._dropped:
                note = f"[output cut here: this cell printed more than {self.max_output_bytes:,} "
                outs.append(
                    NotebookNode(output_type="stream", name="stdout", text=note + "bytes]\n")
                )
            self._dropped[cell_index] = self._dropped.get(cell_index, 0) + size
            return None
        self._sizes[cell_index] = used + size
        return super().output(outs, msg, display_id, cell_index)

    def on_cell_executed(self, **kwargs):
        """Record the reply's error like nbgrader, keeping only the start of a huge one."""
        content = kwargs["execute_reply"]["content"]
        if content.get("status") == "error":
            content["evalue"] = str(content.get("evalue", ""))[:_ERROR_CHARS]
            content["traceback"] = [line[:_ERROR_CHARS] for line in content.get("traceback", [])]
        super().on_cell_executed(**kwargs)


class SetAsideStderr(NbGraderPreprocessor):
    """Move stderr outputs of graded cells into the cell's metadata before grades are saved."""

    def preprocess_cell(self, cell, resources, index):
        """Move this cell's stderr outputs, with their positions, into its metadata."""
        if cell.cell_type == "code" and is_grade(cell):
            kept, aside = [], []
            for position, output in enumerate(cell.outputs):
                if output.output_type == "stream" and output.get("name") == "stderr":
                    aside.append([position, output])
                else:
                    kept.append(output)
            if aside:
                cell.outputs = kept
                cell.metadata[STDERR_KEY] = aside
        return cell, resources


class RestoreStderr(NbGraderPreprocessor):
    """Put the outputs that :class:`SetAsideStderr` moved back where they were."""

    def preprocess_cell(self, cell, resources, index):
        """Insert the stderr outputs back at their old positions."""
        aside = cell.metadata.pop(STDERR_KEY, None)
        if aside:
            for position, output in aside:
                cell.outputs.insert(position, output)
        return cell, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Remove hidden tests from feedback: their source and anything their outputs reveal.

    A failing hidden test keeps one error line that says which exception it raised;
    its message, traceback and printed text are dropped, since they quote the test's
    code and inputs.
    """

    begin_marker = Unicode("BEGIN HIDDEN TESTS", config=True, help="Start of a hidden region.")

    def preprocess(self, nb, resources):
        """Hide the hidden tests of every cell (nbgrader's own remover does the sources)."""
        self._clear = ClearHiddenTests(parent=self)
        self._clear.enforce_metadata = False
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        """Remove a cell's hidden region and replace its outputs by one error line, if any."""
        if cell.cell_type != "code" or self.begin_marker not in cell.source:
            return cell, resources
        cell, resources = self._clear.preprocess_cell(cell, resources, index)
        errors = [out for out in cell.get("outputs", []) if out.output_type == "error"]
        cell.outputs = []
        if errors:
            cell.outputs.append(
                _error(
                    errors[0].ename,
                    "a hidden test failed; its inputs and messages stay hidden until "
                    "submissions close",
                )
            )
        return cell, resources
