"""The check framework behind every exercise.

A check runs the learner's function and the reference on the same seeded inputs
and compares the results. On success it prints one line saying what was verified.
On failure it raises :class:`CheckFailure` with a message that says which case
failed, what was expected and what came back, where the largest difference is
and, when the wrong answer matches a known mistake, which mistake and how to fix
it.

>>> check_function(lambda x: x * 2, lambda x: x + x, [Case((3,), label="three")],
...                name="double")
✓ double: matches the reference on 1 case (three).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "TOLERANCES",
    "Case",
    "CheckFailure",
    "Mistake",
    "check_function",
    "describe_difference",
    "fail",
    "passed",
    "tolerance_for",
]

# (absolute, relative) tolerance for comparing floating-point results, per dtype.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-7),
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1e-2),
}

# How many characters of a value to show in a message before cutting it short.
_SHOW_CHARS = 300


class CheckFailure(AssertionError):
    """Raised when a learner's code differs from the reference.

    It is an ``AssertionError`` so that nbgrader and pytest treat it as a failed test.
    """

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a traceback: the message says it all, and
        # the frames of the check itself would only distract a learner.
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class Case:
    """One input for a check: positional and keyword arguments, and a readable label."""

    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    def describe(self, name: str) -> str:
        """Return the call as the learner would write it, cut short if long."""
        parts = [_short(a, 60) for a in self.args]
        parts += [f"{k}={_short(v, 60)}" for k, v in self.kwargs.items()]
        return f"{name}({', '.join(parts)})"


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation, used to name a learner's mistake.

    ``impl`` has the same signature as the exercise. When the learner's output on a
    failing case equals ``impl``'s output (and differs from the reference), the failure
    message names ``name`` and shows ``hint``.
    """

    name: str
    hint: str
    impl: Callable[..., Any]


def tolerance_for(dtype: torch.dtype) -> tuple[float, float]:
    """Return the (absolute, relative) tolerance used for ``dtype``."""
    return TOLERANCES.get(dtype, (0.0, 0.0))


def passed(message: str) -> None:
    """Print the one success line of a check."""
    print(f"\N{CHECK MARK} {message}")


def fail(message: str) -> None:
    """Raise :class:`CheckFailure` with ``message``."""
    raise CheckFailure(message)


def _short(value: Any, limit: int = _SHOW_CHARS) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 12:
            text = f"tensor({value.tolist()}, dtype={value.dtype})"
        else:
            text = f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_tensor(expected: torch.Tensor, got: Any, what: str) -> str | None:
    """Compare two tensors; return a description of the difference or ``None``."""
    if isinstance(got, np.ndarray):
        return f"{what} should be a torch.Tensor, but it is a numpy array"
    if not isinstance(got, torch.Tensor):
        return f"{what} should be a torch.Tensor, but it is {type(got).__name__}: {_short(got)}"

    # Shape first: a wrong shape makes every value comparison meaningless.
    if tuple(got.shape) != tuple(expected.shape):
        message = f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if sorted(got.shape) == sorted(expected.shape):
            message += " (the same sizes in another order: a transpose or view is off)"
        return message
    if got.dtype != expected.dtype:
        return f"{what} has dtype {got.dtype}, expected {expected.dtype}"

    # Exact comparison for integers and booleans.
    got_cpu, exp_cpu = got.detach().cpu(), expected.detach().cpu()
    if not exp_cpu.is_floating_point():
        wrong = (got_cpu != exp_cpu).nonzero()
        if len(wrong) == 0:
            return None
        where = tuple(wrong[0].tolist())
        return (
            f"{what} differs at {len(wrong)} of {exp_cpu.numel()} positions; first at index "
            f"{where}: expected {exp_cpu[where].item()}, got {got_cpu[where].item()}"
        )

    # Floating point: NaN and infinity, then the largest error against the tolerance.
    bad_nan = torch.isnan(got_cpu) & ~torch.isnan(exp_cpu)
    if bad_nan.any():
        where = tuple(bad_nan.nonzero()[0].tolist())
        return f"{what} contains NaN ({int(bad_nan.sum())} values), first at index {where}"
    atol, rtol = tolerance_for(exp_cpu.dtype)
    exp64, got64 = exp_cpu.double(), got_cpu.double()
    close = torch.isclose(got64, exp64, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    error = (got64 - exp64).abs().nan_to_num(nan=0.0, posinf=math.inf)
    error = torch.where(close, torch.zeros_like(error), error)
    flat = int(error.argmax())
    shape = tuple(exp_cpu.shape)
    where = tuple(int(i) for i in np.unravel_index(flat, shape)) if exp_cpu.dim() else ()
    first = tuple((~close).nonzero()[0].tolist())
    return (
        f"{what} differs at {int((~close).sum())} of {exp_cpu.numel()} positions "
        f"(tolerance atol={atol:g}, rtol={rtol:g}); largest error {error.max().item():.3g} "
        f"at index {where}: expected {exp64[where].item():.6g}, got {got64[where].item():.6g}; "
        f"first bad position {first}"
    )


def describe_difference(expected: Any, got: Any, what: str = "the output") -> str | None:
    """Describe how ``got`` differs from ``expected``; return ``None`` when they agree.

    Tensors are compared with the tolerance of their dtype, floats with float64's,
    containers element by element, so the message points at the first difference.
    """
    if isinstance(expected, torch.Tensor):
        return _describe_tensor(expected, got, what)
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"{what} should be a numpy array, but it is {type(got).__name__}"
        return _describe_tensor(torch.from_numpy(expected), torch.from_numpy(got), what)
    if isinstance(expected, bool) or expected is None:
        return (
            None
            if got is expected or got == expected
            else (f"{what} should be {expected!r}, got {_short(got)}")
        )
    if isinstance(expected, float):
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"{what} should be a float, but it is {type(got).__name__}: {_short(got)}"
        atol, rtol = tolerance_for(torch.float64)
        if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
            return None
        return f"{what} should be {expected!r}, got {got!r}"
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"{what} should be a dict, but it is {type(got).__name__}: {_short(got)}"
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing:
            return f"{what} is missing {len(missing)} key(s), for example {missing[0]!r}"
        if extra:
            return f"{what} has {len(extra)} unexpected key(s), for example {extra[0]!r}"
        for key in expected:
            difference = describe_difference(expected[key], got[key], f"{what}[{key!r}]")
            if difference:
                return difference
        return None
    if isinstance(expected, (list, tuple)):
        # A list where a tuple is expected (or the reverse) is a difference: specifications
        # name the type, and later code may rely on it (tuples can be dict keys).
        kind = list if isinstance(expected, list) else tuple
        if not isinstance(got, kind):
            return (
                f"{what} should be a {type(expected).__name__}, but it is "
                f"{type(got).__name__}: {_short(got)}"
            )
        for i, (e, g) in enumerate(zip(expected, got)):
            difference = describe_difference(e, g, f"{what}[{i}]")
            if difference:
                return difference
        if len(got) != len(expected):
            return f"{what} has length {len(got)}, expected {len(expected)}"
        return None
    if isinstance(expected, (str, bytes)):
        if type(got) is not type(expected):
            return (
                f"{what} should be {type(expected).__name__}, but it is "
                f"{type(got).__name__}: {_short(got)}"
            )
        if got == expected:
            return None
        if max(len(expected), len(got)) <= 20:
            return f"{what} should be {expected!r}, got {got!r}"
        i = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), None)
        i = min(len(expected), len(got)) if i is None else i
        return (
            f"{what} differs from position {i}: expected ...{expected[i : i + 20]!r}, "
            f"got ...{got[i : i + 20]!r} (lengths {len(expected)} and {len(got)})"
        )
    if got == expected:
        return None
    return f"{what} should be {_short(expected)}, got {_short(got)}"


def _same(a: Any, b: Any) -> bool:
    """Whether two results agree within tolerance."""
    try:
        return describe_difference(a, b) is None
    except Exception:  # a comparison that cannot even run means "not the same"
        return False


def recognise_mistake(
    mistakes: Iterable[Mistake], case: Case, got: Any, expected: Any
) -> Mistake | None:
    """Return the first known mistake whose output on ``case`` equals ``got``."""
    for mistake in mistakes:
        try:
            wrong = mistake.impl(*copy.deepcopy(case.args), **copy.deepcopy(dict(case.kwargs)))
        except Exception:
            continue
        if _same(wrong, got) and not _same(wrong, expected):
            return mistake
    return None


def _mistake_raising(mistakes: Iterable[Mistake], case: Case, error: Exception) -> Mistake | None:
    """Return the first known mistake that raises the same kind of error on ``case``."""
    if isinstance(error, NotImplementedError):
        return None
    for mistake in mistakes:
        try:
            mistake.impl(*copy.deepcopy(case.args), **copy.deepcopy(dict(case.kwargs)))
        except Exception as wrong:
            if type(wrong) is type(error):
                return mistake
    return None


def failure_message(
    name: str, case: Case, difference: str, expected: Any, got: Any, mistake: Mistake | None
) -> str:
    """Compose the text of a failed check."""
    label = f" ('{case.label}')" if case.label else ""
    lines = [
        f"{name} is not right yet, on the case{label}: {case.describe(name)}",
        f"  {difference}",
        f"  expected: {_short(expected)}",
        f"  got:      {_short(got)}",
    ]
    if mistake is not None:
        lines += [f"Likely mistake: {mistake.name}.", f"Hint: {mistake.hint}"]
    return "\n".join(lines)


def check_function(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    *,
    name: str | None = None,
    mistakes: Sequence[Mistake] = (),
    compare: Callable[[Any, Any], str | None] | None = None,
    verified: str | None = None,
    note: str | None = None,
) -> None:
    """Check ``fn`` against ``reference`` on every case, or raise :class:`CheckFailure`.

    Args:
        fn: the learner's function.
        reference: the trusted implementation with the same signature.
        cases: inputs; each is deep-copied before each call, so a function that changes
            its input in place is caught and cannot spoil the other call.
        name: the name shown in messages (defaults to ``fn.__name__``).
        mistakes: known wrong implementations, tried in order to name a mistake.
        compare: ``compare(expected, got)`` returning a description of the difference or
            ``None``; defaults to :func:`describe_difference`.
        verified: what the success line says was verified (defaults to the case labels).
        note: a sentence added to every failure, e.g. that this exercise calls the
            learner's answers to earlier ones, so a bug there shows up here.

    Errors raised inside ``fn`` (such as ``NotImplementedError``) propagate unchanged,
    with a note that says which case was running.
    """
    if not callable(fn):
        raise TypeError(f"expected a function to check, got {type(fn).__name__}: {fn!r}")
    if not cases:
        raise ValueError("a check needs at least one case")
    name = name or getattr(fn, "__name__", "your function")
    compare = compare or describe_difference

    for case in cases:
        # Run the reference and the learner on separate copies of the inputs.
        expected = reference(*copy.deepcopy(case.args), **copy.deepcopy(dict(case.kwargs)))
        args, kwargs = copy.deepcopy(case.args), copy.deepcopy(dict(case.kwargs))
        try:
            got = fn(*args, **kwargs)
        except Exception as error:
            error.add_note(f"(raised while checking {case.describe(name)})")
            mistake = _mistake_raising(mistakes, case, error)
            if mistake is not None:
                error.add_note(f"Likely mistake: {mistake.name}.\nHint: {mistake.hint}")
            raise

        # A function that changed its input is a bug even when its result is right.
        if _changed(case.args, args):
            raise CheckFailure(
                f"{name} changed its input in place on the case {case.describe(name)}; "
                "build a new list or tensor instead of modifying the argument"
            )

        difference = compare(expected, got)
        if difference is not None:
            mistake = recognise_mistake(mistakes, case, got, expected)
            message = failure_message(name, case, difference, expected, got, mistake)
            raise CheckFailure(f"{message}\nNote: {note}" if note else message)

    labels = ", ".join(c.label for c in cases if c.label)
    plural = "case" if len(cases) == 1 else "cases"
    what = verified or (
        f"{len(cases)} {plural} ({labels})" if labels else f"{len(cases)} {plural}"
    )
    passed(f"{name}: matches the reference on {what}.")


def _changed(original: Sequence, after: Sequence) -> bool:
    """Whether any argument differs after the call (tensors, lists and dicts)."""
    for a, b in zip(original, after):
        if isinstance(a, (torch.Tensor, list, dict, bytearray)) and not _same(a, b):
            return True
    return False
