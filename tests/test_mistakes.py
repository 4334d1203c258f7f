"""Known mistakes fail the graded cells, and the checks name them; the solution passes.

For every exercise of every notebook, each wrong implementation registered with the
exercise (``course_lib.exercises.<topic>.EXERCISES``) or listed in
``tests/mistakes/<topic>.py`` replaces the learner's definition, and the exercise's
graded cells (visible check and hidden tests) run again. At least one must fail.
"""

from __future__ import annotations

import ast
import importlib
from functools import cache

import pytest

from course_lib.autograde import exercise_ids
from tests.notebook_harness import (
    ASSIGNMENTS,
    execute_in_process,
    exercises_module,
    graded_cells,
    read,
    run_graded,
    solution_path,
)

MIN_MISTAKES = 3


def _extra_mistakes(assignment: str) -> dict:
    try:
        module = importlib.import_module(f"tests.mistakes.{assignment[3:]}")
    except ModuleNotFoundError:
        return {}
    return module.EXTRA_MISTAKES


def _cases():
    for assignment in ASSIGNMENTS:
        registry = exercises_module(assignment).EXERCISES
        extra = _extra_mistakes(assignment)
        for exercise in exercise_ids(read(solution_path(assignment))):
            for mistake in registry[exercise].mistakes:
                yield pytest.param(
                    assignment,
                    exercise,
                    mistake,
                    True,
                    id=f"{assignment}-{exercise}-{mistake.name}",
                )
            for mistake in extra.get(exercise, ()):
                yield pytest.param(
                    assignment,
                    exercise,
                    mistake,
                    False,
                    id=f"{assignment}-{exercise}-{mistake.name}",
                )


@cache
def _namespace(assignment: str) -> dict:
    return execute_in_process(solution_path(assignment))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_exercise_is_registered_with_enough_mistakes(assignment):
    registry = exercises_module(assignment).EXERCISES
    extra = _extra_mistakes(assignment)
    for exercise in exercise_ids(read(solution_path(assignment))):
        assert exercise in registry, f"{exercise} is not registered in EXERCISES"
        count = len(registry[exercise].mistakes) + len(extra.get(exercise, ()))
        assert count >= MIN_MISTAKES, f"{exercise} has {count} known mistakes, need 3"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_passes_every_graded_cell(assignment):
    namespace = _namespace(assignment)
    path = solution_path(assignment)
    for exercise in exercise_ids(read(path)):
        for result in run_graded(namespace, path, exercise, {}):
            assert result.error is None, f"{result.grade_id} fails on the solution:\n{result.text}"
            if result.grade_id.endswith("-check"):
                lines = result.output.strip().splitlines()
                assert lines and lines[-1].startswith("\N{CHECK MARK}"), (
                    f"{result.grade_id} should end with one success line, printed {lines}"
                )
        # The check function's result must be None (no partial-credit number): run the
        # cell's earlier statements, then evaluate its last expression on its own.
        for gid, source in graded_cells(path, exercise):
            *before, last = ast.parse(source).body
            if isinstance(last, ast.Expr):
                scope = dict(namespace)
                exec(compile(ast.Module(body=before, type_ignores=[]), gid, "exec"), scope)
                value = eval(compile(ast.Expression(last.value), gid, "eval"), scope)
                assert value is None, f"{gid} leaves {value!r} as its result"


@pytest.mark.parametrize(("assignment", "exercise", "mistake", "named"), list(_cases()))
def test_mistake_fails_graded_cells(assignment, exercise, mistake, named):
    namespace = _namespace(assignment)
    symbol = exercises_module(assignment).EXERCISES[exercise].symbol
    results = run_graded(namespace, solution_path(assignment), exercise, {symbol: mistake.impl})
    failed = [r for r in results if r.error is not None]
    assert failed, f"the mistake '{mistake.name}' passes every graded cell of {exercise}"
    if named:
        assert any(mistake.name in r.text for r in failed), (
            f"the check does not name the mistake '{mistake.name}'; it said:\n"
            + "\n".join(r.text for r in failed)
        )
