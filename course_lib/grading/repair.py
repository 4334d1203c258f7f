"""Reading a handed-in notebook whatever state it is in, and restoring its graded cells.

nbgrader restores the read-only and test cells of a submission from the course's
source, but a few things students really do stop its whole run or lose them points
they earned: a graded cell copied (the same grade id twice), an answer cell turned
into Markdown, a notebook saved in an older or newer format, or cell metadata of a
schema nbgrader does not know. :func:`repair` rebuilds the notebook around the
student's own code before nbgrader sees it:

* every cell of the released notebook that carries a grade id appears exactly once,
  with the released metadata (points included); test and read-only cells also get
  the released source back;
* an answer cell keeps the student's code, as a code cell even if it was turned into
  Markdown;
* a copy of an answer cell stays where it is as an ordinary code cell, so the code runs
  as the student ran it; a copy of any other graded or read-only cell is dropped;
* cells the student added stay in place, without nbgrader metadata;
* a deleted cell comes back after the cell that preceded it in the released notebook.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import nbformat
from nbformat import NotebookNode

__all__ = ["UnreadableNotebook", "read_cells", "repair"]

# What a notebook must at least look like to be graded at all.
_CELL_TYPES = ("code", "markdown", "raw")


class UnreadableNotebook(ValueError):
    """The file is not a notebook that can be graded (empty, not JSON, no cells)."""


def _text(source) -> str:
    if isinstance(source, list):
        return "".join(str(part) for part in source)
    return source if isinstance(source, str) else ""


def read_cells(path: Path) -> list[dict]:
    """Read a notebook file leniently; return its cells as plain dictionaries.

    Each dictionary has ``cell_type``, ``source`` (a string) and ``nbgrader`` (the
    cell's nbgrader metadata, or ``None``). Notebooks of format 3 are converted; newer
    formats are read as far as their cells look like format 4 cells.

    Raises:
        UnreadableNotebook: the file is empty, not JSON, or has no cells list.
    """
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise UnreadableNotebook("the file is empty")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        raise UnreadableNotebook(f"not valid notebook JSON ({error})") from None
    if not isinstance(data, dict):
        raise UnreadableNotebook(f"expected a JSON object, found {type(data).__name__}")

    # Format 3 keeps cells in worksheets and code in "input": let nbformat convert it.
    major = data.get("nbformat")
    if isinstance(major, int) and major < 4:
        try:
            data = nbformat.convert(nbformat.from_dict(data), 4)
        except Exception as error:  # nbformat raises many kinds on malformed files
            raise UnreadableNotebook(
                f"an old notebook format that cannot be converted: {error}"
            ) from None
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise UnreadableNotebook("the notebook has no list of cells")

    found = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in _CELL_TYPES:
            continue
        metadata = cell.get("metadata")
        meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
        found.append(
            {
                "cell_type": cell["cell_type"],
                "source": _text(cell.get("source", cell.get("input", ""))),
                "nbgrader": meta if isinstance(meta, dict) else None,
            }
        )
    return found


def _grade_id(meta: Mapping | None) -> str | None:
    if not meta:
        return None
    value = meta.get("grade_id")
    return value if isinstance(value, str) else None


def _is_answer(cell: Mapping) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("solution")) and cell.get("cell_type") == "code"


def _plain_cell(cell_type: str, source: str) -> NotebookNode:
    if cell_type == "code":
        return nbformat.v4.new_code_cell(source)
    if cell_type == "raw":
        return nbformat.v4.new_raw_cell(source)
    return nbformat.v4.new_markdown_cell(source)


def repair(cells: list[dict], release: NotebookNode) -> tuple[NotebookNode, list[str]]:
    """Rebuild a submission around the released notebook's graded and read-only cells.

    Args:
        cells: the submission's cells, as :func:`read_cells` returns them.
        release: the released (student) version of the notebook, as nbgrader generated it.

    Returns:
        The notebook to grade, and notes on what was restored, in words for the report.
    """
    released = {}
    order = []
    for index, cell in enumerate(release.cells):
        gid = _grade_id(cell.get("metadata", {}).get("nbgrader"))
        if gid is not None:
            released[gid] = (index, cell)
            order.append(gid)

    out: list[NotebookNode] = []
    placed: dict[str, NotebookNode] = {}
    notes: list[str] = []
    for cell in cells:
        gid = _grade_id(cell["nbgrader"])
        if gid not in released:
            # A cell the student added; nbgrader metadata of an unknown cell is ignored.
            if cell["nbgrader"]:
                notes.append("ignored nbgrader metadata on a cell that is not in the notebook")
            out.append(_plain_cell(cell["cell_type"], cell["source"]))
            continue
        original = released[gid][1]
        if gid in placed:
            if _is_answer(original):
                notes.append(f"a copy of answer cell {gid} runs as an ordinary cell")
                out.append(_plain_cell("code", cell["source"]))
            else:
                notes.append(f"dropped a copy of cell {gid}")
            continue
        restored = copy.deepcopy(original)
        if _is_answer(original):
            restored.source = cell["source"]
            if cell["cell_type"] != "code":
                notes.append(f"answer cell {gid} had been turned into {cell['cell_type']}")
        elif original.get("metadata", {}).get("nbgrader", {}).get("grade"):
            if cell["source"] != original.source or cell["cell_type"] != original.cell_type:
                notes.append(f"restored test cell {gid}")
            elif cell["nbgrader"].get("points") != original.metadata.nbgrader.get("points"):
                notes.append(f"restored the points of {gid}")
        if restored.cell_type == "code":
            restored.outputs = []
            restored.execution_count = None
        out.append(restored)
        placed[gid] = restored

    # Cells that were deleted come back after the cell that preceded them.
    for position, gid in enumerate(order):
        if gid in placed:
            continue
        original = released[gid][1]
        if _is_answer(original) or original.metadata.nbgrader.get("grade"):
            notes.append(f"restored deleted cell {gid}")
        restored = copy.deepcopy(original)
        earlier = [placed[g] for g in order[:position] if g in placed]
        at = next(i for i, c in enumerate(out) if c is earlier[-1]) + 1 if earlier else 0
        out.insert(at, restored)
        placed[gid] = restored

    nb = nbformat.v4.new_notebook(metadata=copy.deepcopy(release.metadata))
    nb.cells = out
    _unique_ids(nb)
    return nb, notes


def _unique_ids(nb: NotebookNode) -> None:
    """Give every cell an id of its own (copies of a cell share one)."""
    seen: set[str] = set()
    for cell in nb.cells:
        if not cell.get("id") or cell.id in seen:
            cell.id = nbformat.v4.new_code_cell().id
        seen.add(cell.id)
