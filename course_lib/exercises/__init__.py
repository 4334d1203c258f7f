"""The checks behind each notebook's exercises, one module per notebook.

Each module defines, for every exercise of its notebook, a ``check_<exercise>``
function that the notebook's graded cells call, and registers the exercise in
``EXERCISES`` with the known mistakes that the check can recognise and name. The
visible check uses the module's default cases; the hidden tests in the instructor
notebook call the same function with other cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from course_lib.checks import Mistake

__all__ = ["Exercise"]


@dataclass(frozen=True)
class Exercise:
    """An exercise: its id (the grade id of its answer cell), the name the learner
    defines (a function or class), and the known mistakes its check can name."""

    id: str
    symbol: str
    mistakes: Sequence[Mistake] = field(default_factory=tuple)
