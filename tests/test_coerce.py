"""exporter.coerce: one verdict per value, the same row by row, in batches and over HTTP."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter import ModelMonitor, ReferenceProfile, coerce
from exporter.coerce import ABSENT, INF, MISSING, NAN, WRONG_TYPE, Invalid
from exporter.config import load_config
from exporter.metrics import flush_registry
from exporter.monitor import TASKS, DriftSnapshot, Task
from exporter.outcomes import (
    MemoryOutcomeStore,
    OutcomeStore,
    PendingBatch,
    PendingPrediction,
    Resolution,
    SqliteOutcomeStore,
    decode,
)
from exporter.profile import OUTPUT
from exporter.server import BodyLimit, build_service, create_app
from tests.service_fixtures import write_setup

BASE = {"model": "m", "version": "unversioned"}


class HostileInt(int):
    """An int whose conversion to float raises."""

    def __float__(self) -> float:
        raise RuntimeError("no float for you")


class HostileText:
    """An object whose text raises, and whose comparisons do too."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison for you")

    __hash__ = object.__hash__


HOSTILE_INT = HostileInt(5)
HOSTILE_TEXT = HostileText()
BIG = 10**400
#: The largest double as JSON writes it (its shortest decimal), as an integer: the bound.
LARGEST = 17976931348623157 * 10**292


@dataclass(frozen=True)
class Case:
    name: str
    value: Any
    number: float | Invalid
    category: str | Invalid
    confidence: float | Invalid


#: Every value type of the issue (and a few more), with its verdict as a number, a category and a
#: confidence: the module docstring's table, row by row.
CASES = [
    Case("float", 2.5, 2.5, "2.5", WRONG_TYPE),
    Case("whole float", 3.0, 3.0, "3", WRONG_TYPE),
    Case("float in [0, 1]", 0.25, 0.25, "0.25", 0.25),
    Case("int", 7, 7.0, "7", WRONG_TYPE),
    Case("int zero", 0, 0.0, "0", 0.0),
    Case("big int", BIG, INF, str(BIG), WRONG_TYPE),
    Case("largest double as an int", LARGEST, float(LARGEST), str(LARGEST), WRONG_TYPE),
    # float() rounds it down to the largest double, but it is past every double.
    Case("one past the largest double", LARGEST + 1, INF, str(LARGEST + 1), WRONG_TYPE),
    Case("Decimal", Decimal("3.5"), 3.5, "3.5", WRONG_TYPE),
    Case("whole Decimal", Decimal("3.0"), 3.0, "3", WRONG_TYPE),
    Case("numeric str", "3.5", WRONG_TYPE, "3.5", WRONG_TYPE),
    Case("numeric bytes", b"3.5", WRONG_TYPE, WRONG_TYPE, WRONG_TYPE),
    Case("np.bool_", np.bool_(True), WRONG_TYPE, "True", WRONG_TYPE),
    Case("bool", False, WRONG_TYPE, "False", WRONG_TYPE),
    Case("complex", 1 + 2j, WRONG_TYPE, "(1+2j)", WRONG_TYPE),
    Case("NaN", math.nan, NAN, MISSING, NAN),
    Case("inf", math.inf, INF, "inf", WRONG_TYPE),
    Case("-inf", -math.inf, INF, "-inf", WRONG_TYPE),
    Case("None", None, MISSING, MISSING, MISSING),
    Case("absent key", ABSENT, MISSING, MISSING, MISSING),
    Case("pd.NA", pd.NA, MISSING, MISSING, MISSING),
    Case("pd.NaT", pd.NaT, MISSING, MISSING, MISSING),
    Case("datetime64 NaT", np.datetime64("NaT"), MISSING, MISSING, MISSING),
    Case("timedelta64", np.timedelta64(5, "s"), WRONG_TYPE, "0:00:05", WRONG_TYPE),
    Case("int with a raising __float__", HOSTILE_INT, WRONG_TYPE, "5", WRONG_TYPE),
    Case("object with a raising __str__", HOSTILE_TEXT, WRONG_TYPE, WRONG_TYPE, WRONG_TYPE),
    Case("np.float32", np.float32(0.5), 0.5, "0.5", 0.5),
    Case("np.float64 NaN", np.float64("nan"), NAN, MISSING, NAN),
    Case("np.int64", np.int64(7), 7.0, "7", WRONG_TYPE),
    Case("np.str_", np.str_("red"), WRONG_TYPE, "red", WRONG_TYPE),
    Case("list", [1.0], WRONG_TYPE, WRONG_TYPE, WRONG_TYPE),
    Case("dict", {"a": 1}, WRONG_TYPE, WRONG_TYPE, WRONG_TYPE),
    Case("confidence above one", 1.5, 1.5, "1.5", WRONG_TYPE),
    Case("negative number", -1.0, -1.0, "-1", WRONG_TYPE),
]
SCALARS: list[tuple[str, Callable[[object], Any], Callable[[Any], Any]]] = [
    ("number", coerce.number, coerce.numbers),
    ("category", coerce.category, coerce.categories),
    ("confidence", coerce.confidence, coerce.confidences),
]


def same(got: object, expected: object) -> bool:
    """Equal and of the same type: a valid ``float`` or ``str``, or the same reason."""
    return type(got) is type(expected) and got == expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_value_type_has_one_verdict_per_kind(case: Case) -> None:
    for kind, scalar, vector in SCALARS:
        expected = getattr(case, kind)
        assert same(scalar(case.value), expected), (kind, scalar(case.value))
        # The same value alone in a column, in an object array and in a list.
        column = np.empty(1, dtype=object)
        column[0] = case.value
        for container in (column, [case.value], pd.Series(column, dtype=object)):
            (got,) = vector(container).verdicts()
            assert same(got, expected), (kind, type(container).__name__, got)


def test_a_column_of_every_value_type_judges_each_as_the_scalar_does() -> None:
    values = [case.value for case in CASES]
    column = np.empty(len(values), dtype=object)
    column[:] = values
    for kind, scalar, vector in SCALARS:
        for container in (column, values, pd.Series(column, dtype=object), tuple(values)):
            got = vector(container).verdicts()
            expected = [scalar(v) for v in values]
            assert all(same(g, e) for g, e in zip(got, expected, strict=True)), kind


def typed_columns() -> Iterator[tuple[str, Any, Sequence[Any]]]:
    """(name, column, its elements): numpy and pandas columns of every kind of dtype."""
    floats = np.array([0.5, -2.0, 3.0, np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300])
    arrays: dict[str, np.ndarray] = {
        "float64": floats,
        "float32": floats[:-1].astype(np.float32),
        "float16": np.array([0.5, np.nan, 2.0], dtype=np.float16),
        "int64": np.array([0, -3, 7, 2**62]),
        "uint8": np.array([0, 3, 255], dtype=np.uint8),
        "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "bool": np.array([True, False]),
        "str": np.array(["red", "", "3.5", "3"]),
        "bytes": np.array([b"3.5", b"red"]),
        "complex": np.array([1 + 2j, np.nan]),
        "datetime64": np.array(["2024-01-01", "NaT"], dtype="datetime64[s]"),
        "timedelta64": np.array([5, "NaT"], dtype="timedelta64[s]"),
        "object text": np.array(["red", "green", np.str_("blue")], dtype=object),
        "object text with gaps": np.array(["red", None, math.nan, pd.NA], dtype=object),
        "object numbers": np.array([1, 2.5, BIG, Decimal("1.5"), True, None], dtype=object),
    }
    for name, array in arrays.items():
        yield f"array {name}", array, list(array)
        series = pd.Series(array)
        yield f"Series {name}", series, series.tolist()
    extension: dict[str, Any] = {
        "Int64": pd.array([1, None, 3], dtype="Int64"),
        "Float64": pd.array([1.5, None, 2.0], dtype="Float64"),
        "boolean": pd.array([True, None], dtype="boolean"),
        "string": pd.array(["red", None], dtype="string"),
        "category": pd.Categorical(["red", None, "blue"]),
        "numeric category": pd.Categorical([1.0, None, 3.0]),
        "datetime with zone": pd.array(pd.to_datetime(["2024-01-01", "NaT"]).tz_localize("UTC")),
    }
    for name, array in extension.items():
        series = pd.Series(array)
        yield f"Series {name}", series, series.tolist()
    default_text = pd.Series(["red", None, "blue"])  # pandas' default text dtype
    yield "Series default text", default_text, default_text.tolist()


@pytest.mark.parametrize(("name", "column", "elements"), list(typed_columns()),
                         ids=[name for name, _, _ in typed_columns()])  # fmt: skip
def test_vectorised_twins_give_the_scalar_verdict_of_every_element(
    name: str, column: Any, elements: Sequence[Any]
) -> None:
    for kind, scalar, vector in SCALARS:
        got = vector(column).verdicts()
        expected = [scalar(e) for e in elements]
        assert len(got) == len(expected)
        for g, e, element in zip(got, expected, elements, strict=True):
            assert same(g, e), (kind, element, g, e)


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_columns(rows: int) -> None:
    for _, _, vector in SCALARS:
        for column in (np.zeros(rows), np.full(rows, "a"), [None] * rows, pd.Series([1.0] * rows)):
            assert len(vector(column).verdicts()) == rows


def test_plain_float_and_text_columns_make_no_call_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = 100_000
    calls = 0
    number, category = coerce.number, coerce.category

    def counting_number(value: object) -> Any:
        nonlocal calls
        calls += 1
        return number(value)

    def counting_category(value: object) -> Any:
        nonlocal calls
        calls += 1
        return category(value)

    monkeypatch.setattr(coerce, "number", counting_number)
    monkeypatch.setattr(coerce, "category", counting_category)
    floats = np.random.default_rng(0).normal(size=rows)
    floats[::1000] = np.nan
    judged = coerce.numbers(floats)
    assert judged.counts() == {NAN: rows // 1000}
    coerce.numbers(pd.Series(floats))
    coerce.confidences(floats)
    coerce.numbers(np.arange(rows))
    text = np.array(["red", "green", "blue"] * (rows // 3), dtype=object)
    assert coerce.categories(text).counts() == {}
    coerce.categories(text.astype(str))
    coerce.categories(pd.Series(text, dtype="string"))
    assert calls == 0
    coerce.categories(np.round(floats))  # numbers as categories: one call per distinct value
    assert calls <= len(np.unique(np.round(floats)))


# -- the monitor: row by row and in batches alike -------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class KeptStore(MemoryOutcomeStore):
    """The in-memory store, remembering every prediction it was given, and how: one by one or
    in a batch of columns (PendingBatch)."""

    def __init__(self, max_pending: int = 10_000) -> None:
        super().__init__(max_pending=max_pending)
        self.kept: dict[str, PendingPrediction] = {}
        self.batches: list[type] = []

    def remember(self, pending: PendingPrediction) -> None:
        self.kept[pending.prediction_id] = pending
        super().remember(pending)

    def remember_many(self, pendings: Sequence[PendingPrediction]) -> None:
        self.batches.append(type(pendings))
        self.kept.update((p.prediction_id, p) for p in pendings)
        super().remember_many(pendings)


def stored(store: OutcomeStore, ids: list[str]) -> list[tuple[Any, ...] | None]:
    """What a store holds for each id: (created_at, version, prediction, confidence), or None."""
    if isinstance(store, KeptStore):
        found = [store.kept.get(pid) for pid in ids]
        return [None if p is None else (p.created_at, p.version, p.prediction, p.confidence)
                for p in found]  # fmt: skip
    assert isinstance(store, SqliteOutcomeStore)
    rows = {
        row[0]: (row[1], row[2], decode(row[3]), row[4])
        for row in store._db.execute(
            "SELECT id, created_at, version, prediction, confidence FROM predictions"
        )
    }
    return [rows.get(pid) for pid in ids]


def make_profile(task: Task) -> ReferenceProfile:
    rng = np.random.default_rng(4)
    n = 2_000
    frame = pd.DataFrame(
        {
            "x": rng.normal(0, 2, n),
            "color": rng.choice(["red", "green", "blue", "3"], n),
            "label": rng.choice(["cat", "dog", "True"], n)
            if task == "classification"
            else rng.normal(10, 3, n),
        }
    )
    kind: Literal["categorical", "numeric"] = (
        "categorical" if task == "classification" else "numeric"
    )
    return ReferenceProfile.from_frame(
        frame, ["x"], ["color"], target="label", target_kind=kind, sample_size=500
    )


PROFILES = {task: make_profile(task) for task in TASKS}


def make_monitor(task: Task, registry: CollectorRegistry, store: OutcomeStore) -> ModelMonitor:
    return ModelMonitor(
        "m", task=task, reference=PROFILES[task], registry=registry, clock=Clock(),
        min_samples=1, domains={"x": (-5.0, 5.0)}, outcomes=store,
    )  # fmt: skip


#: Values of every type of the table, plus ordinary ones of each kind, for the generated rows.
STRANGE = [case.value for case in CASES]
ORDINARY = [0.5, -1.0, 4.0, 7.5, 3, "red", "green", "blue", "purple", "3", "cat", "dog", 0.9, 0.2]
values = st.one_of(
    st.sampled_from(STRANGE + ORDINARY),
    # Finite floats of a sane size: NaN, the infinities and 10**400 are in STRANGE.
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-10, max_value=10),
)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=12))
    column = st.lists(values, min_size=n, max_size=n)
    return {
        "task": draw(st.sampled_from(TASKS)),
        "x": draw(column),
        "color": draw(column),
        "predictions": draw(column),
        "confidences": draw(st.none() | column),
        "actuals": draw(column),
        "second_actuals": draw(column),
        "as_arrays": draw(st.booleans()),
        # keep=False in both paths; a memory store whose cap the rows pass, or SQLite.
        "keep": draw(st.booleans()),
        "store": draw(st.sampled_from(["memory", "small memory", "sqlite"])),
    }


def as_column(items: list[Any], as_array: bool) -> Any:
    """Predictions or confidences: float64 when every item is a plain float (the numpy path),
    else an object array; or the plain list."""
    if not as_array:
        return list(items)
    if all(type(v) is float for v in items):
        return np.asarray(items, dtype=np.float64)
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


def frame_column(items: list[Any]) -> pd.Series:
    """A DataFrame column holding exactly these items: float64 when all are plain floats, else
    objects (from a list, pandas would infer a dtype and convert the items: [2.5, 1+2j] becomes
    complex, and text with None becomes text with NaN)."""
    if all(type(v) is float for v in items):
        return pd.Series(items, dtype=np.float64)
    return pd.Series(items, dtype=object)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    flush_registry(registry)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def drift_values(snapshot: DriftSnapshot) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    for feature, windows in snapshot.features.items():
        for window, drift in windows.items():
            for name in ("samples", "ready", "psi", "ks_statistic", "ks_pvalue", "zscore",
                         "current_mean", "js_distance", "chi2_pvalue"):  # fmt: skip
                found[(feature, window, name)] = getattr(drift, name)
    for window, performance in snapshot.performance.items():
        found[(window, "samples")] = performance.samples
        for name, metric in performance.metrics.items():
            found[(window, name)] = metric
    return found


def close(a: Any, b: Any) -> bool:
    """Equal, allowing for the order of a floating-point sum (one value at a time in observe,
    numpy's pairwise sums in a batch)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
    return bool(a == b)


def make_store(kind: str, directory: Path, name: str) -> OutcomeStore:
    if kind == "sqlite":
        return SqliteOutcomeStore(directory / f"{name}.sqlite3")
    return KeptStore(max_pending=3 if kind == "small memory" else 10_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_observe_and_observe_batch_agree_on_any_mix_of_values(batch: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        one_store = make_store(batch["store"], Path(directory), "one")
        many_store = make_store(batch["store"], Path(directory), "many")
        try:
            agree_on(batch, one_store, many_store)
        finally:
            one_store.close()
            many_store.close()


def agree_on(batch: dict[str, Any], one_store: OutcomeStore, many_store: OutcomeStore) -> None:
    """Row by row and in a batch: the same counters, drift, stored predictions and outcomes."""
    task, keep = batch["task"], batch["keep"]
    n = len(batch["x"])
    confidences = batch["confidences"] or [None] * n
    one_registry, many_registry = CollectorRegistry(), CollectorRegistry()
    one = make_monitor(task, one_registry, one_store)
    many = make_monitor(task, many_registry, many_store)

    one_ids = []
    for i in range(n):
        row = {name: batch[name][i] for name in ("x", "color") if batch[name][i] is not ABSENT}
        one_ids.append(one.observe(row, batch["predictions"][i], confidences[i], keep=keep))
    # An absent key has no place in a column: there it is None, missing as well.
    frame = pd.DataFrame(
        {name: frame_column([None if v is ABSENT else v for v in batch[name]])
         for name in ("x", "color")}
    )  # fmt: skip
    many_ids = many.observe_batch(
        frame,
        as_column(batch["predictions"], batch["as_arrays"]),
        None if batch["confidences"] is None else as_column(confidences, batch["as_arrays"]),
        keep=keep,
    )

    # What each path kept for the ground truth, and what pending() says it would keep.
    kept_one, kept_many = stored(one_store, one_ids), stored(many_store, many_ids)
    for i in range(n):
        pending = one.pending("probe", batch["predictions"][i], confidences[i]) if keep else None
        expected = None if pending is None else (Clock().now, "unversioned", pending.prediction,
                                                 pending.confidence)  # fmt: skip
        assert kept_one[i] == kept_many[i] == expected, (i, kept_one[i], kept_many[i], expected)
    if isinstance(many_store, KeptStore):  # the batch reached the store as columns, once
        assert many_store.batches == ([PendingBatch] if any(kept_many) else [])
    assert one_store.pending_count() == many_store.pending_count()
    for actuals in (batch["actuals"], batch["second_actuals"]):
        for i, actual in enumerate(actuals):
            assert one.record_outcome(one_ids[i], actual) is many.record_outcome(
                many_ids[i], actual
            ), (i, actual)
    assert one_store.pending_count() == many_store.pending_count()

    one.flush()
    many.flush()
    a, b = samples(one_registry), samples(many_registry)
    assert a.keys() == b.keys()
    assert [k for k in a if not close(a[k], b[k])] == []
    assert a[("model_monitor_internal_errors_total", tuple(sorted(BASE.items())))] == 0
    drift_one = drift_values(one.drift(max_age=0))
    drift_many = drift_values(many.drift(max_age=0))
    assert drift_one.keys() == drift_many.keys()
    assert [k for k in drift_one if not close(drift_one[k], drift_many[k])] == []


# -- one strange value never loses the prediction ---------------------------------------------


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    flush_registry(registry)  # a read sees what the monitors' flush has written
    found = registry.get_sample_value(name, {**BASE, **labels})
    return 0.0 if found is None else found


def invalid(registry: CollectorRegistry, feature: str, reason: str) -> float:
    return value(registry, "model_input_invalid_total", feature=feature, reason=reason)


@pytest.mark.parametrize("strange", [np.timedelta64(5, "s"), HOSTILE_INT],
                         ids=["timedelta64", "int with a raising __float__"])  # fmt: skip
def test_a_strange_value_is_counted_invalid_and_the_prediction_still_counts(
    strange: Any,
) -> None:
    registry = CollectorRegistry()
    monitor = make_monitor("classification", registry, KeptStore())
    pid = monitor.observe({"x": strange, "color": "red"}, "cat", 0.9)
    monitor.flush()
    assert registry.get_sample_value("model_monitor_internal_errors_total", BASE) == 0
    assert invalid(registry, "x", "wrong_type") == 1
    assert value(registry, "model_feature_bin_total", feature="color", bin="red") == 1
    assert (
        value(registry, "model_predictions_total", predicted="cat", confidence_bucket="high") == 1
    )
    assert monitor.record_outcome(pid, "cat") is Resolution.RECORDED


def test_a_huge_integer_in_a_batch_loses_no_prediction() -> None:
    rows = 1_000
    registry = CollectorRegistry()
    monitor = make_monitor("regression", registry, MemoryOutcomeStore())
    x = np.empty(rows, dtype=object)
    x[:] = np.linspace(-4, 4, rows).tolist()
    x[500] = BIG
    ids = monitor.observe_batch(pd.DataFrame({"x": x, "color": ["red"] * rows}), [10.0] * rows)
    monitor.flush()
    assert registry.get_sample_value("model_monitor_internal_errors_total", BASE) == 0
    assert (
        value(registry, "model_predictions_total", predicted="", confidence_bucket="none") == rows
    )
    assert invalid(registry, "x", "inf") == 1
    assert monitor.drift(max_age=0)["x"]["5m"].samples == rows - 1
    assert all(monitor.record_outcome(pid, 11.0) is Resolution.RECORDED for pid in ids)


def test_a_bool_regression_output_is_wrong_type_neither_binned_nor_kept() -> None:
    registry = CollectorRegistry()
    store = KeptStore()
    monitor = make_monitor("regression", registry, store)
    pid = monitor.observe({"x": 1.0, "color": "red"}, True)
    assert invalid(registry, OUTPUT, "wrong_type") == 1
    assert monitor.drift(max_age=0)[OUTPUT]["5m"].samples == 0
    assert store.kept == {} and monitor.record_outcome(pid, 1.0) is Resolution.UNKNOWN


def test_a_bytes_class_is_wrong_type_everywhere() -> None:
    registry = CollectorRegistry()
    store = KeptStore()
    monitor = make_monitor("classification", registry, store)
    monitor.observe({"x": 1.0, "color": "red"}, b"cat")
    monitor.observe_batch(pd.DataFrame({"x": [1.0], "color": ["red"]}), [b"cat"])
    assert invalid(registry, OUTPUT, "wrong_type") == 2
    assert store.kept == {} and monitor.pending("p", b"cat", None) is None


# -- the service refuses exactly what the library counts wrong_type ------------------------------


@pytest.fixture
def regression(tmp_path: Path) -> Iterator[TestClient]:
    config = write_setup(tmp_path, "regression", store="memory")
    service = build_service(load_config(config), tmp_path / "data")
    with TestClient(BodyLimit(create_app(service), 65536)) as client:
        yield client


#: JSON values of every type for a numeric feature, and what the service answers with 422.
JSON_VALUES: list[tuple[Any, str | None]] = [
    (True, "must be a number, got boolean"),
    (False, "must be a number, got boolean"),
    ("3.5", "must be a number, got string"),
    ("far", "must be a number, got string"),
    ([1], "must be a number, got array"),
    ({"a": 1}, "must be a number, got object"),
    (10**399, "is out of the range of a double"),
    # Past the largest double as the schema writes it, though below its exact value: out of the
    # schema's range, so refused (schema fuzzing sent it and got 200).
    (LARGEST + 1, "is out of the range of a double"),
    (int(coerce.LARGEST_DOUBLE), "is out of the range of a double"),
    (LARGEST, None),
    (3, None),
    (2.5, None),
    (None, None),
]


@pytest.mark.parametrize(("value", "refusal"), JSON_VALUES,
                         ids=[repr(v)[:20] for v, _ in JSON_VALUES])  # fmt: skip
def test_the_service_refuses_what_the_library_counts_wrong_type(
    regression: TestClient, value: Any, refusal: str | None
) -> None:
    verdict = coerce.number(value)
    # The library: one row with this value, counted under the verdict's reason when invalid.
    registry = CollectorRegistry()
    library = make_monitor("regression", registry, MemoryOutcomeStore())
    library.observe({"x": value, "color": "red"}, 10.0)
    if isinstance(verdict, Invalid):
        assert invalid(registry, "x", verdict) == 1
    # The service: 422 naming the field exactly for the values the library calls wrong_type
    # (or inf, a number past a double), counted under the same reason.
    answer = regression.post("/predict", json={"features": {"miles": value}})
    refused = verdict in (WRONG_TYPE, INF)
    assert (answer.status_code == 422) == refused == (refusal is not None), answer.text
    if refused:
        assert answer.json()["detail"] == [{"field": "features.miles", "reason": refusal}]
        text = regression.get("/metrics").text
        line = f'model_input_invalid_total{{feature="miles",model="toy",reason="{verdict}"'
        assert any(row.startswith(line) and row.endswith(" 1.0") for row in text.splitlines())
    else:
        assert answer.status_code == 200, answer.text
