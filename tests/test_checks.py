"""The check framework: what it accepts, what it reports, and which mistakes it names."""

from __future__ import annotations

import pytest
import torch

from course_lib.checks import Case, CheckFailure, Mistake, check_function, describe_difference


def _double(x):
    return x * 2


CASES = [Case((3,), label="three"), Case((torch.arange(4.0),), label="a tensor")]


def test_correct_function_prints_one_line(capsys):
    result = check_function(lambda x: x + x, _double, CASES, name="double")
    assert result is None  # nbgrader would read a number as partial credit
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["\N{CHECK MARK} double: matches the reference on 2 cases (three, a tensor)."]


def test_wrong_value_reports_expected_got_and_case():
    with pytest.raises(CheckFailure) as info:
        check_function(lambda x: x * 3, _double, CASES, name="double")
    message = str(info.value)
    assert "'three'" in message and "double(3)" in message
    assert "expected: 6" in message and "got:      9" in message


def test_known_mistake_is_named_with_its_hint():
    mistakes = [Mistake("tripled instead of doubled", "multiply by two", lambda x: x * 3)]
    with pytest.raises(CheckFailure, match="Likely mistake: tripled instead of doubled"):
        check_function(lambda x: 3 * x, _double, CASES, name="double", mistakes=mistakes)


def test_unrecognised_mistake_names_nothing():
    mistakes = [Mistake("tripled", "multiply by two", lambda x: x * 3)]
    with pytest.raises(CheckFailure) as info:
        check_function(lambda x: x + 1, _double, CASES, mistakes=mistakes)
    assert "Likely mistake" not in str(info.value)


def test_exception_in_learner_code_propagates_with_the_case():
    def unfinished(x):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError) as info:
        check_function(unfinished, _double, CASES)
    assert any("unfinished(3)" in note for note in info.value.__notes__)


def test_exception_matching_a_known_mistake_is_named():
    def strict(data):
        return data.decode("utf-8")

    mistakes = [Mistake("strict decoding", "use errors='replace'", strict)]
    cases = [Case((b"\xa9",), label="a lone continuation byte")]
    with pytest.raises(UnicodeDecodeError) as info:
        check_function(
            strict, lambda d: d.decode("utf-8", errors="replace"), cases, mistakes=mistakes
        )
    assert any("strict decoding" in note for note in info.value.__notes__)


def test_changing_the_input_in_place_is_caught():
    def sort_in_place(items):
        items.sort()
        return items

    with pytest.raises(CheckFailure, match="changed its input in place"):
        check_function(sort_in_place, sorted, [Case(([3, 1, 2],))])


@pytest.mark.parametrize(
    ("expected", "got", "fragment"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 2), "the same sizes in another order"),
        (torch.zeros(2, 3), torch.zeros(2, 4), "has shape (2, 4), expected (2, 3)"),
        (torch.zeros(2), torch.zeros(2, dtype=torch.float64), "dtype torch.float64"),
        (torch.zeros(3), [0.0, 0.0, 0.0], "should be a torch.Tensor"),
        (torch.zeros(3), torch.tensor([0.0, float("nan"), 0.0]), "NaN"),
        (torch.zeros(2, 2), torch.tensor([[0.0, 0.0], [0.0, 0.5]]), "largest error 0.5"),
        ({(1, 2): 2}, {(1, 2): 1}, "[(1, 2)] should be 2, got 1"),
        ({(1, 2): 2}, {}, "missing 1 key"),
        ([1, 2, 3], [1, 2], "length 2, expected 3"),
        ("abc", "abd", "should be 'abc', got 'abd'"),
        ("a" * 30 + "b", "a" * 31, "differs from position 30"),
        ([(1, 2)], [[1, 2]], "should be a tuple, but it is list"),
        (1.0, 1.1, "should be 1.0, got 1.1"),
    ],
    ids=[
        "transposed",
        "wrong-shape",
        "wrong-dtype",
        "list-for-tensor",
        "nan",
        "largest-error",
        "dict-value",
        "dict-key",
        "list-length",
        "short-string",
        "long-string",
        "list-for-tuple",
        "float",
    ],
)
def test_differences_are_described_plainly(expected, got, fragment):
    difference = describe_difference(expected, got)
    assert difference is not None and fragment in difference, difference


def test_values_within_tolerance_agree():
    exact = torch.linspace(0, 1, 50)
    assert describe_difference(exact, exact + 1e-7) is None
    assert describe_difference(exact.double(), exact.double() + 1e-12) is None
    assert describe_difference(exact, exact + 1e-3) is not None


def test_note_is_added_to_failures():
    with pytest.raises(CheckFailure, match="Note: this uses your merge"):
        check_function(lambda x: x, _double, CASES, note="this uses your merge")


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="expected a function"):
        check_function(42, _double, CASES)
    with pytest.raises(ValueError, match="at least one case"):
        check_function(_double, _double, [])
