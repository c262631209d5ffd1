"""``feature_matrix`` and ``numbers`` read feature values into floats exactly as
``as_number`` defines, value by value, whether they take a one-pass path (all values
numbers; for ``feature_matrix`` also dicts with the same keys in one order) or fall
back: drift, the out-of-range signal and reference builds use them, and a batch must
read the same as its events one by one."""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.reference import as_number, feature_matrix, numbers, pick, uniform_columns

NAMES = ["a", "b", "c", "d"]
numbers_only = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                         st.integers(-2**62, 2**62), st.booleans())
# values a Python caller may put in a feature map: numpy's and fractions are numbers,
# a Decimal, a complex, a str (even "1.5") and None are missing
odd = st.sampled_from([np.int64(7), np.float32(0.5), Fraction(1, 3), Decimal("1.5"), 2j,
                       "red", "1.5", "", None])
values = st.one_of(numbers_only, odd)


def _same(rows: list[Any], names: list[str]) -> None:
    expected = np.array([[as_number(r.get(n)) for n in names] for r in rows],
                        dtype=float).reshape(len(rows), len(names))
    for got in (feature_matrix(rows, names), numbers(pick(rows, names), len(names))):
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)  # NaN where NaN, same bits elsewhere


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(numbers_only, odd.filter(lambda v: isinstance(v, np.number | Fraction))),
                        min_size=4, max_size=4), min_size=0, max_size=12),
       st.permutations(NAMES), st.lists(st.sampled_from(NAMES), unique=True))
def test_uniform_numeric_rows_read_in_one_pass_equal_the_row_by_row_reading(
        table: list[list[Any]], order: list[str], names: list[str]) -> None:
    rows = [dict(zip(order, r, strict=True)) for r in table]
    _same(rows, names)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from([*NAMES, "e"]), values, max_size=5),
                min_size=0, max_size=12),
       st.lists(st.sampled_from(NAMES), unique=True))
def test_any_rows_read_the_same_as_row_by_row(rows: list[dict[str, Any]], names: list[str]) -> None:
    _same(rows, names)


def test_the_one_pass_path_is_taken_only_when_it_is_exact() -> None:
    rows = [{"a": 1.0, "b": 2, "c": True}, {"a": 4.0, "b": 5, "c": False}]
    flat, columns = uniform_columns(rows, ["c", "a"])  # type: ignore[misc]
    assert flat.tolist() == [[1.0, 2.0, 1.0], [4.0, 5.0, 0.0]] and columns == [2, 0]
    assert uniform_columns(rows, ["a", "b", "c"])[1] is None  # type: ignore[index]
    # a string ("1.5" would convert), None, another key order, a missing name or a
    # mapping that is not a plain dict all take the exact row-by-row path
    for changed in ({"a": "1.5", "b": 5, "c": False}, {"a": None, "b": 5, "c": False},
                    {"b": 5, "a": 4.0, "c": False}, {"a": 4.0, "b": 5}):
        assert uniform_columns([rows[0], changed], ["a"]) is None
        _same([rows[0], changed], ["a", "b", "c"])
    proxies = [MappingProxyType(r) for r in rows]
    assert uniform_columns(proxies, ["a"]) is None
    _same(proxies, ["a", "c"])  # type: ignore[arg-type]
    odd_rows = [OrderedDict(r) for r in rows]  # a dict, but not a plain one
    assert uniform_columns(odd_rows, ["a"]) is None
    _same(odd_rows, ["a", "b"])  # type: ignore[arg-type]
    assert uniform_columns([rows[0], None], ["a"]) is None  # type: ignore[list-item]
    assert uniform_columns([{"a": 1.0}, {"a": 2.0}], ["z"]) is None
