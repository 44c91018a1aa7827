"""How a value given to the monitor is judged: a valid number, category or confidence, or the
reason it is invalid (the ``reason`` label of ``model_input_invalid_total``).

Every place that judges a value calls this module: :meth:`ModelMonitor.observe` row by row,
:meth:`ModelMonitor.observe_batch` column by column, outputs, confidences, ground truth, the outcome
stores, the segment feature and the HTTP service's request checks. So a value has one verdict
wherever it arrives: a value counted ``wrong_type`` by the library is one the service refuses with
422, and a row gives the same counters observed alone or in a batch.

Three kinds of value, each with one scalar function and one vectorised twin:

* :func:`number` / :func:`numbers`: numeric features, regression outputs and regression actuals;
* :func:`category` / :func:`categories`: categorical features, class predictions, class actuals;
* :func:`confidence` / :func:`confidences`: the confidence of a class prediction.

============================================  ==========  =================  =============
value                                         number      category           confidence
============================================  ==========  =================  =============
float, finite (np.float16/32/64 too)          the float   whole: "3" (3.0),  the float if
                                                          else "3.5"         in [0, 1],
                                                                             else wrong_type
NaN (any float type, Decimal NaN or sNaN)     nan         missing            nan
+-inf (any float type, Decimal("Infinity"))   inf         "inf" / "-inf"     wrong_type
int, np.int64 and other numpy integers,       the float   its digits         as a number
int subclasses
int past the largest double as JSON writes  inf         its digits         wrong_type
it (10**400, 17976931348623157 * 10**292 +
1)
Decimal("3.5"), Fraction, other numbers.Real  the float   whole: digits,     as a number
                                                          else str(value)
bool, np.bool_                                wrong_type  "True" / "False"   wrong_type
str, np.str_ ("3.5" too)                      wrong_type  the text as is     wrong_type
bytes (b"3.5"), bytearray, memoryview         wrong_type  wrong_type         wrong_type
complex (1+2j), numpy complex                 wrong_type  "(1+2j)"           wrong_type
None, absent key, pd.NA, pd.NaT, NaT of       missing     missing            missing: none
np.datetime64 / np.timedelta64                                               given, counted
                                                                             nowhere
other np.datetime64, np.timedelta64(5, "s")   wrong_type  str of .item()     wrong_type
list, tuple, dict, set, frozenset, ndarray    wrong_type  wrong_type         wrong_type
any other object (datetime, pd.Timestamp)     wrong_type  str(value)         wrong_type
the conversion raises: an int subclass whose  wrong_type  wrong_type         wrong_type
__float__ raises (as a number), a hostile
__str__ (as a category), a raising
__class__, an int past Python's str digit
limit (as a category)
============================================  ==========  =================  =============

Why:

* A boolean is not a measurement: as a number it is ``wrong_type`` (the JSON API refuses ``true``
  for a numeric feature too), never 1.0. As a category it is a flag, a category of two values:
  a profile of a bool column keys it ``"True"``/``"False"`` and the API accepts JSON booleans for
  categorical features, so it stays one (``True`` and ``1`` are different categories).
* Numeric text is not a number (``"3.5"``, ``b"3.5"``): the JSON API refuses it, and a client
  sending numbers as text is a data-quality problem to see, not to hide.
* A number that cannot be represented as a double is ``inf``, the value it would become.
* A float NaN is ``nan`` as a number, but ``missing`` as a category: there is no ``nan`` reason
  for categories, and pandas stores a missing category as NaN (a CSV's empty cell).
* Categories keep :func:`category_key`'s long-standing keys: whole numbers compare as integers
  (pandas turns an integer column with gaps into floats, so ``3.0`` and ``3`` are one category),
  text is itself. Bytes are ``wrong_type``: their text would be ``"b'...'"``, never a category a
  profile holds.
* A confidence is a number in [0, 1]; outside it (infinities too) it is ``wrong_type``, NaN is
  ``nan``, and ``missing`` means no confidence was given (``confidence_bucket="none"``, counted
  nowhere).
* Nothing here raises for a value: whatever cannot be converted is ``wrong_type``.

``out_of_domain`` and ``unknown_category`` depend on the watched feature's domain and reference, so
the monitor decides them after this module said the value is a valid number or category.

The vectorised twins take a numpy array, a pandas Series (any dtype, object columns included) or
any sequence, and give for each element exactly what the scalar function gives for it; a Series'
elements are those of ``Series.tolist()`` (what ``DataFrame.to_dict("records")`` gives row by
row). Float, integer, boolean and string columns are judged by numpy without a Python call per
row; object columns, and categories of numbers per distinct value, call the scalar function.
"""

from __future__ import annotations

import math
import numbers as abc
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int8]
ObjectArray = npt.NDArray[np.object_]


class Invalid(str):
    """Why a value is invalid: compares and hashes as its text, the ``reason`` label value, so
    it indexes a ``{reason: counter}`` mapping directly. A valid category is always of type
    ``str`` exactly, never ``Invalid``, so ``type(result) is str`` tells a key from a reason."""

    __slots__ = ()


MISSING = Invalid("missing")
NAN = Invalid("nan")
INF = Invalid("inf")
WRONG_TYPE = Invalid("wrong_type")
#: Decided by the monitor from a watched feature's domain and reference, after this module.
OUT_OF_DOMAIN = Invalid("out_of_domain")
UNKNOWN_CATEGORY = Invalid("unknown_category")

#: The reasons a number, and a category, can be invalid for (label values, in this order).
NUMBER_REASONS: tuple[str, ...] = ("missing", "nan", "inf", "wrong_type")
CATEGORY_REASONS: tuple[str, ...] = ("missing", "wrong_type")

#: Reasons by code in the vectorised results; code 0 (``None`` here) is a valid value.
REASONS: tuple[Invalid | None, ...] = (None, MISSING, NAN, INF, WRONG_TYPE)
VALID_CODE = 0
MISSING_CODE, NAN_CODE, INF_CODE, WRONG_TYPE_CODE = 1, 2, 3, 4
_CODE_OF: dict[Invalid, int] = {MISSING: 1, NAN: 2, INF: 3, WRONG_TYPE: 4}


class _Absent:
    """A feature key missing from its row (``features.get(name, ABSENT)``): ``missing``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()

#: The largest finite double, and the largest exact number (an int, a Decimal) taken as one: the
#: double's shortest decimal, 17976931348623157 x 10**292, about 8e291 below its exact value.
#: That is the bound a JSON schema states (``maximum: 1.7976931348623157e308``) and validators
#: compare exactly, so an integer between the two would be valid to the library and out of range
#: to the API's schema; float() would round it to the largest double, and past the exact value
#: down to it too, so neither is a double the client meant.
LARGEST_DOUBLE = 1.7976931348623157e308
_LARGEST_INTEGER = 17976931348623157 * 10**292

#: Values that hold several values: never one number or one category.
_CONTAINERS = (bytes, bytearray, memoryview, list, tuple, dict, set, frozenset, np.ndarray)
#: Numbers: ``numbers.Real`` holds int, float, Fraction and numpy's integers and floats.
_REAL = (abc.Real, np.integer, np.floating, Decimal)
_NAT_TYPES = (np.datetime64, np.timedelta64)


# -- numbers ----------------------------------------------------------------------------------


def number(value: object) -> float | Invalid:
    """A numeric value as a finite ``float``, or why it is invalid (see the module's table)."""
    if type(value) is float:  # the common case: one type check and one subtraction
        if value - value == 0.0:  # false for NaN and for +-inf
            return value
        return NAN if value != value else INF
    if type(value) is int:
        try:
            x = float(value)
        except OverflowError:
            return INF
        if -LARGEST_DOUBLE < x < LARGEST_DOUBLE or -_LARGEST_INTEGER <= value <= _LARGEST_INTEGER:
            return x
        return INF
    if value is None:
        return MISSING
    return _other_number(value)


def _other_number(value: object) -> float | Invalid:
    try:
        if value is ABSENT or value is pd.NA or value is pd.NaT:
            return MISSING
        if isinstance(value, (bool, np.bool_)):
            return WRONG_TYPE
        if isinstance(value, _NAT_TYPES):
            return MISSING if np.isnat(value) else WRONG_TYPE
        if not isinstance(value, _REAL):
            return WRONG_TYPE
        if isinstance(value, Decimal) and value.is_nan():  # float() refuses a signaling NaN
            return NAN
        try:
            x = float(value)
        except OverflowError:
            return INF
        if (x == LARGEST_DOUBLE or x == -LARGEST_DOUBLE) and abs(
            cast(Any, value)
        ) > _LARGEST_INTEGER:
            return INF  # an exact number (int, Decimal, Fraction) rounded down to a double
    except Exception:
        return WRONG_TYPE
    if x - x == 0.0:
        return x
    return NAN if x != x else INF


class Numbers(NamedTuple):
    """A column judged as numbers: ``values`` holds each valid number (NaN elsewhere), ``codes``
    0 for a valid value and otherwise the index of its reason in :data:`REASONS`."""

    values: FloatArray
    codes: CodeArray

    def verdicts(self) -> list[float | Invalid]:
        """Element by element, what :func:`number` gives."""
        reasons = [REASONS[c] for c in self.codes.tolist()]
        values = self.values.tolist()
        return [r if r is not None else v for r, v in zip(reasons, values, strict=True)]

    def counts(self) -> dict[Invalid, int]:
        return _reason_counts(self.codes)


def numbers(column: Any) -> Numbers:
    """:func:`number` of every element of a column, by numpy for numeric columns."""
    data = _column(column)
    if not isinstance(data, pd.Series):
        return _numbers_of(data)
    dtype = data.dtype
    if isinstance(dtype, np.dtype):  # NaT and a Timestamp judge as NaT and datetime64 do
        return _numbers_of(data.to_numpy())
    if pd.api.types.is_bool_dtype(dtype):  # nullable booleans: NA is missing
        return _constant(len(data), WRONG_TYPE_CODE, data.isna().to_numpy(dtype=bool))
    if pd.api.types.is_numeric_dtype(dtype):  # nullable or Arrow numbers: NA is missing
        missing = data.isna().to_numpy(dtype=bool)
        values = data.to_numpy(dtype=np.float64, na_value=np.nan)
        return _float_verdicts(values, missing)
    return _numbers_of(_objects(data.tolist()))


def _numbers_of(array: npt.NDArray[Any]) -> Numbers:
    kind = array.dtype.kind
    if kind == "f":
        return _float_verdicts(array.astype(np.float64, copy=False), None)
    if kind in "iu":
        values = array.astype(np.float64)
        return Numbers(values, np.zeros(len(values), dtype=np.int8))
    if kind in "mM":
        return _constant(len(array), WRONG_TYPE_CODE, np.isnat(array))
    if kind != "O":  # booleans, complex numbers, text, bytes, records
        return _constant(len(array), WRONG_TYPE_CODE, None)
    results = list(map(number, array))
    values = np.fromiter(
        (r if type(r) is float else math.nan for r in results), dtype=np.float64, count=len(results)
    )
    codes = np.fromiter(
        (0 if type(r) is float else _CODE_OF[r] for r in results),  # type: ignore[index]
        dtype=np.int8,
        count=len(results),
    )
    return Numbers(values, codes)


def _float_verdicts(values: FloatArray, missing: npt.NDArray[np.bool_] | None) -> Numbers:
    codes = np.zeros(len(values), dtype=np.int8)
    finite = np.isfinite(values)
    if not finite.all():
        codes[np.isnan(values)] = NAN_CODE
        codes[np.isinf(values)] = INF_CODE
    if missing is not None and missing.any():
        codes[missing] = MISSING_CODE
    return Numbers(values, codes)


def _constant(n: int, code: int, missing: npt.NDArray[np.bool_] | None) -> Numbers:
    codes = np.full(n, code, dtype=np.int8)
    if missing is not None:
        codes[missing] = MISSING_CODE
    return Numbers(np.full(n, math.nan), codes)


# -- categories ---------------------------------------------------------------------------------


def category(value: object) -> str | Invalid:
    """A categorical value as its key (a ``str``), or why it is invalid (the module's table)."""
    if type(value) is str:
        return value
    return _other_category(value)


def _other_category(value: object) -> str | Invalid:
    try:
        if value is None or value is ABSENT or value is pd.NA or value is pd.NaT:
            return MISSING
        if isinstance(value, str):  # a subclass (np.str_, an Invalid): its plain text
            return str.__str__(value)
        if isinstance(value, _CONTAINERS):  # bytes (np.bytes_ too) and collections
            return WRONG_TYPE
        if isinstance(value, _NAT_TYPES) and np.isnat(value):
            return MISSING
        if isinstance(value, np.generic):  # a numpy scalar is keyed as its Python value
            return _other_category(value.item())
        if isinstance(value, float):
            if value != value:
                return MISSING
            if value.is_integer():  # whole floats compare as integers: 3.0 is "3"
                return str(int(value))
        elif isinstance(value, Decimal):
            if value.is_nan():
                return MISSING
            if value.is_finite() and value == value.to_integral_value():
                return str(int(value))
        key = str(value)
        return key if type(key) is str else str.__str__(key)
    except Exception:
        return WRONG_TYPE


def category_key(value: object) -> str | None:
    """The key of a category, or ``None`` for any invalid one: the profile's view, which keeps
    the keys of valid values and drops the rest (:func:`category` says why)."""
    key = category(value)
    return key if type(key) is str else None


class Categories(NamedTuple):
    """A column judged as categories: ``keys`` holds each valid key (None elsewhere), ``codes``
    0 for a valid value and otherwise the index of its reason in :data:`REASONS`."""

    keys: ObjectArray
    codes: CodeArray

    def verdicts(self) -> list[str | Invalid]:
        """Element by element, what :func:`category` gives."""
        reasons = [REASONS[c] for c in self.codes.tolist()]
        keys = self.keys.tolist()
        return [r if r is not None else k for r, k in zip(reasons, keys, strict=True)]

    def counts(self) -> dict[Invalid, int]:
        return _reason_counts(self.codes)


def categories(column: Any) -> Categories:
    """:func:`category` of every element of a column; text columns by numpy, numeric ones one
    call per distinct value."""
    data = _column(column)
    if isinstance(data, pd.Series):
        dtype = data.dtype
        if isinstance(dtype, pd.StringDtype):
            missing = data.isna().to_numpy(dtype=bool)
            present = ~missing
            # A new array: to_numpy() may hand out the Series' own storage.
            keys = np.full(len(data), None, dtype=object)
            keys[present] = _plain_text(data.to_numpy(dtype=object)[present])
            codes = np.where(missing, MISSING_CODE, VALID_CODE).astype(np.int8)
            return Categories(keys, codes)
        if isinstance(dtype, np.dtype) and dtype.kind not in "mM":
            data = data.to_numpy()
        else:  # datetimes become Timestamps, extension types their Python values, as tolist()
            data = _objects(data.tolist())
    kind = data.dtype.kind
    if kind == "U":
        return Categories(data.astype(object), np.zeros(len(data), dtype=np.int8))
    if kind == "S":
        return Categories(np.full(len(data), None, dtype=object),
                          np.full(len(data), WRONG_TYPE_CODE, dtype=np.int8))  # fmt: skip
    if kind in "biuf":
        return _per_distinct(data)
    if kind == "O" and pd.api.types.infer_dtype(data, skipna=False) == "string":
        # All text: each key is its plain text (a str subclass's too), in C, as category() does.
        keys = np.asarray(_plain_text(data), dtype=object)
        return Categories(keys, np.zeros(len(data), dtype=np.int8))
    return _categories_of(list(data))


#: ``str.__str__`` over an object array: the plain text of each str (itself when it is one).
_plain_text = np.frompyfunc(str.__str__, 1, 1)


def _per_distinct(array: npt.NDArray[Any]) -> Categories:
    """Categories of a numeric array: the scalar function once per distinct value (NaN, the
    factorizer's -1, is missing, as :func:`category` says)."""
    wide = {"f": np.float64, "i": np.int64, "u": np.uint64}.get(array.dtype.kind)
    positions, distinct = pd.factorize(array if wide is None else array.astype(wide))
    judged = _categories_of(list(distinct))
    # Position -1 (NaN) takes one more entry at the end: missing.
    keys = np.full(len(distinct) + 1, None, dtype=object)
    keys[:-1] = judged.keys
    codes = np.full(len(distinct) + 1, MISSING_CODE, dtype=np.int8)
    codes[:-1] = judged.codes
    return Categories(keys[positions], codes[positions])


def _categories_of(items: list[Any]) -> Categories:
    results = list(map(category, items))
    n = len(results)
    keys = _objects(r if type(r) is str else None for r in results)
    codes = np.fromiter(
        (0 if type(r) is str else _CODE_OF[r] for r in results),  # type: ignore[index]
        dtype=np.int8,
        count=n,
    )
    return Categories(keys, codes)


# -- confidences -------------------------------------------------------------------------------


def confidence(value: object) -> float | Invalid:
    """A confidence as a float in [0, 1], or why it is invalid; ``MISSING`` means none given."""
    if type(value) is float:  # the common case without a second call
        if 0.0 <= value <= 1.0:
            return value
        return NAN if value != value else WRONG_TYPE
    x = number(value)
    if type(x) is float:
        return x if 0.0 <= x <= 1.0 else WRONG_TYPE
    return WRONG_TYPE if x is INF else x


def confidences(column: Any) -> Numbers:
    """:func:`confidence` of every element of a column."""
    judged = numbers(column)
    codes = judged.codes.copy()
    values = judged.values
    codes[codes == INF_CODE] = WRONG_TYPE_CODE
    with np.errstate(invalid="ignore"):
        outside = (codes == VALID_CODE) & ~((values >= 0.0) & (values <= 1.0))
    codes[outside] = WRONG_TYPE_CODE
    return Numbers(values, codes)


# -- helpers -----------------------------------------------------------------------------------


def _column(column: Any) -> pd.Series | npt.NDArray[Any]:
    """A Series, or a one-dimensional numpy array holding the column's elements."""
    if isinstance(column, pd.Series):
        return column
    if isinstance(column, np.ndarray):
        return column if column.ndim == 1 else _objects(list(column))
    if isinstance(column, (pd.Index, pd.api.extensions.ExtensionArray)):
        return pd.Series(column)
    return _objects(list(column))


def _objects(items: Iterable[Any]) -> ObjectArray:
    """An object array of exactly these items (np.array would unpack nested sequences)."""
    values = list(items)
    return np.fromiter(values, dtype=object, count=len(values))


def _reason_counts(codes: CodeArray) -> dict[Invalid, int]:
    counts = np.bincount(codes, minlength=len(REASONS)).tolist()
    return {reason: counts[code] for code, reason in enumerate(REASONS) if reason and counts[code]}


__all__ = [
    "ABSENT",
    "CATEGORY_REASONS",
    "NUMBER_REASONS",
    "VALID_CODE",
    "INF",
    "MISSING",
    "NAN",
    "OUT_OF_DOMAIN",
    "REASONS",
    "UNKNOWN_CATEGORY",
    "WRONG_TYPE",
    "Categories",
    "Invalid",
    "Numbers",
    "categories",
    "category",
    "category_key",
    "confidence",
    "confidences",
    "number",
    "numbers",
]
