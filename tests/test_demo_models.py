"""The demo models, their example configs and the reference profiles built from them."""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from exporter.config import load_config
from exporter.demo_models import DemoModelError, Once, fare, intent
from exporter.profile import CategoricalFeature, NumericFeature, ReferenceProfile
from exporter.server import import_callable

ROOT = Path(__file__).resolve().parent.parent


def _build_examples() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_examples", ROOT / "scripts" / "build_examples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _split() -> tuple[list[intent.Utterance], list[intent.Utterance]]:
    """Every fifth utterance of each intent is held out; the rest trains."""
    seen: Counter[str] = Counter()
    train: list[intent.Utterance] = []
    held_out: list[intent.Utterance] = []
    for utterance in intent.load_utterances():
        (held_out if seen[utterance.intent] % 5 == 0 else train).append(utterance)
        seen[utterance.intent] += 1
    return train, held_out


# -- intent ----------------------------------------------------------------------------------------


def test_the_shipped_corpus_has_many_varied_utterances_per_intent() -> None:
    corpus = intent.load_utterances()
    per_intent = Counter(u.intent for u in corpus)
    assert len(per_intent) >= 6
    assert min(per_intent.values()) >= 40
    assert len({u.text for u in corpus}) == len(corpus), "duplicate utterances"
    assert intent.intents() == tuple(sorted(per_intent))


def test_classifier_generalises_to_held_out_utterances() -> None:
    train, held_out = _split()
    model = intent.NaiveBayes.fit([u.text for u in train], [u.intent for u in train])
    rng = np.random.default_rng(3)
    for texts in (
        [u.text for u in held_out],
        [intent.with_typos(u.text, rng) for u in held_out],  # as users type them
    ):
        predicted = [model.classify(t)[0] for t in texts]
        accuracy = np.mean([p == u.intent for p, u in zip(predicted, held_out, strict=True)])
        assert accuracy > 0.85, accuracy


def test_confidences_are_the_posterior_of_the_predicted_intent() -> None:
    train, held_out = _split()
    model = intent.NaiveBayes.fit([u.text for u in train], [u.intent for u in train])
    floor = 1 / len(model.classes)
    for utterance in [*held_out, intent.Utterance("qwxz zzyzx", "unknown")]:
        posterior = model.posterior(utterance.text)
        assert posterior.shape == (len(model.classes),)
        assert np.all(posterior >= 0) and math.isclose(posterior.sum(), 1.0, rel_tol=1e-9)
        label, confidence = model.classify(utterance.text)
        assert isinstance(confidence, float)
        assert floor - 1e-12 <= confidence <= 1.0
        assert confidence == pytest.approx(posterior.max())
        assert label == model.classes[int(np.argmax(posterior))]


def test_predict_and_derive_features_for_a_request() -> None:
    label, confidence = intent.predict({"text": "I lost my debit card", "channel": "app"})
    assert label == "card_lost" and 0.5 < confidence <= 1.0
    assert intent.derive_features({"text": "Hello zzqxv!", "channel": "web"}) == {
        "text_length": 12,
        "token_count": 2,
        "oov_share": 0.5,
        "channel": "web",
    }
    empty = intent.derive_features({"text": ""})
    assert empty == {"text_length": 0, "token_count": 0, "oov_share": 0.0, "channel": None}


@pytest.mark.parametrize("features", [{}, {"text": None}, {"text": 3}, {"text": ["hi"]}])
def test_intent_bad_text_raises_type_error(features: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="text"):
        intent.predict(features)
    with pytest.raises(TypeError, match="text"):
        intent.derive_features(features)


def test_intent_features_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        intent.predict("I lost my card")  # type: ignore[arg-type]


def test_synthetic_requests_match_the_reference_mix_and_shift_away_from_it() -> None:
    size = 2 * len(intent.load_utterances())
    normal = intent.synthetic_requests(size, seed=5)
    assert normal.equals(intent.synthetic_requests(size, seed=5))
    # Two shuffled rounds over the corpus: every utterance's intent exactly twice as often.
    assert Counter(normal["intent"]) == Counter(
        {k: 2 * v for k, v in Counter(u.intent for u in intent.load_utterances()).items()}
    )
    shares = normal["channel"].value_counts(normalize=True)
    assert shares["app"] > shares["web"] > shares["phone"]
    shifted = intent.synthetic_requests(size, seed=5, shift=True)
    derive = [intent.derive_features(r) for r in _records(normal)]
    derive_shifted = [intent.derive_features(r) for r in _records(shifted)]
    length = np.mean([d["text_length"] for d in derive])
    assert np.mean([d["text_length"] for d in derive_shifted]) > 3 * length
    assert np.mean([d["oov_share"] for d in derive]) < 0.1
    assert np.mean([d["oov_share"] for d in derive_shifted]) > 0.5
    assert (shifted["channel"] == "phone").mean() > 0.5


# -- fare ------------------------------------------------------------------------------------------


def test_fare_model_is_accurate_on_fresh_trips() -> None:
    trips = fare.synthetic_trips(5_000, seed=123)
    predicted = fare.model().predict_frame(trips)
    errors = np.abs(predicted - trips["fare"].to_numpy())
    assert errors.mean() < 3.5  # seed 000's "OK" band: the demo is healthy until degraded
    assert np.mean(errors <= 5) > 0.9
    # One request gives the same fare as the batch.
    for row, expected in zip(_records(trips.head(50)), predicted[:50], strict=True):
        assert fare.predict(row) == expected


def test_synthetic_trips_are_realistic_and_reproducible() -> None:
    trips = fare.synthetic_trips(10_000, seed=9)
    assert list(trips.columns) == [*fare.FEATURES, "fare"]
    assert trips.equals(fare.synthetic_trips(10_000, seed=9))
    assert (trips["trip_miles"] > 0).all() and (trips["fare"] >= fare.BASE_FARE).all()
    ratio = trips["straight_line_km"] / (trips["trip_miles"] * fare.KM_PER_MILE)
    assert ratio.between(0.59, 0.91).all()
    assert trips["hour"].between(0, 23).all()
    assert np.corrcoef(trips["trip_miles"], trips["trip_seconds"])[0, 1] > 0.8
    rush, night = fare.rush_and_night(trips["hour"].to_numpy(dtype=np.float64))
    pace = trips["trip_seconds"] / trips["trip_miles"]
    assert pace[rush].median() > pace[~rush & ~night].median() > pace[night].median()
    longer = fare.synthetic_trips(10_000, seed=9, shift=2.5)
    assert longer["trip_miles"].mean() == pytest.approx(2.5 * trips["trip_miles"].mean(), rel=0.01)


@pytest.mark.parametrize(
    "bad",
    [{"trip_miles": "3.1"}, {"trip_miles": None}, {"trip_miles": True}, {"hour": [7]}],
)
def test_fare_bad_types_raise_type_error(bad: dict[str, object]) -> None:
    features: dict[str, object] = {
        "trip_miles": 3.0,
        "trip_seconds": 700,
        "straight_line_km": 3.6,
        "hour": 8,
    }
    with pytest.raises(TypeError, match=next(iter(bad))):
        fare.predict({**features, **bad})
    missing = dict(features)
    del missing["hour"]
    with pytest.raises(TypeError, match="hour"):
        fare.predict(missing)
    with pytest.raises(ValueError, match="finite"):
        fare.predict({**features, "trip_seconds": math.nan})
    with pytest.raises(TypeError, match="mapping"):
        fare.predict([3.0, 700, 3.6, 8])  # type: ignore[arg-type]


# -- demo faults and lazy training -----------------------------------------------------------------

Predict = Callable[[dict[str, Any]], Any]
REQUESTS: dict[str, tuple[Predict, dict[str, Any]]] = {
    "intent": (intent.predict, {"text": "what time do you open", "channel": "web"}),
    "fare": (
        fare.predict,
        {"trip_miles": 2.0, "trip_seconds": 600, "straight_line_km": 2.5, "hour": 12},
    ),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_fault_error_raises_demo_model_error(name: str) -> None:
    predict, features = REQUESTS[name]
    predict(features)  # trained, and fine without a fault
    with pytest.raises(DemoModelError):
        predict({**features, "_fault": "error"})
    assert issubclass(DemoModelError, RuntimeError)
    with pytest.raises(ValueError, match="_fault"):
        predict({**features, "_fault": "explode"})


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_fault_slow_sleeps_then_answers(name: str) -> None:
    predict, features = REQUESTS[name]
    expected = predict(features)
    started = time.perf_counter()
    answer = predict({**features, "_fault": "slow"})
    elapsed = time.perf_counter() - started
    assert answer == expected
    assert 0.25 <= elapsed < 1.0


def test_once_builds_a_single_time_under_concurrent_first_calls() -> None:
    calls = []
    gate = threading.Barrier(8)

    def build() -> list[int]:
        calls.append(1)
        time.sleep(0.05)  # long enough for every thread to arrive while building
        return [42]

    once: Once[list[int]] = Once(build)
    results: list[list[int]] = []

    def first_call() -> None:
        gate.wait()
        results.append(once.get())

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)


# -- examples --------------------------------------------------------------------------------------


def test_committed_references_are_what_the_build_script_produces() -> None:
    build = _build_examples()
    assert set(build.PROFILES) == {"intent", "fare"}
    for name, make in build.PROFILES.items():
        committed = ReferenceProfile.load(ROOT / "examples" / name / "reference.json")
        assert committed.fingerprint() == make().fingerprint(), (
            f"examples/{name}/reference.json is stale: run python scripts/build_examples.py"
        )


@pytest.mark.parametrize(
    ("name", "task", "output_kind"),
    [("intent", "classification", CategoricalFeature), ("fare", "regression", NumericFeature)],
)
def test_example_configs_load_with_their_reference_and_model(
    name: str, task: str, output_kind: type
) -> None:
    config = load_config(ROOT / "examples" / name / "monitor.yml")
    assert config.model.name == name and config.model.task == task
    path = config.reference_path()
    assert path is not None and path == ROOT / "examples" / name / "reference.json"
    profile = ReferenceProfile.load(path)
    assert config.features is not None
    profile.require(config.features)
    assert isinstance(profile.output, output_kind)
    assert callable(import_callable(config.model.import_path, "model.import_path"))
    if config.model.derive_features:
        derive = import_callable(config.model.derive_features, "model.derive_features")
        derived = derive({"text": "hello there", "channel": "app"})
        assert set(config.features) <= set(derived)


def test_example_thresholds_follow_the_seeds() -> None:
    fare_config = load_config(ROOT / "examples" / "fare" / "monitor.yml")
    assert fare_config.thresholds["mae_warning"] == 3.5
    assert fare_config.thresholds["mae_critical"] == 5.0
    intent_config = load_config(ROOT / "examples" / "intent" / "monitor.yml")
    assert intent_config.thresholds["accuracy_drop"] == 0.1
    assert intent_config.thresholds["low_confidence_share"] == 0.3
    assert intent_config.monitoring.classes == list(intent.intents())


def test_intent_reference_reflects_typed_utterances() -> None:
    profile = ReferenceProfile.load(ROOT / "examples" / "intent" / "reference.json")
    oov = profile.features["oov_share"]
    assert isinstance(oov, NumericFeature)
    # Typos give the out-of-vocabulary share a spread, so drift in it is measurable.
    assert oov.std > 0 and oov.edges
    channel = profile.features["channel"]
    assert isinstance(channel, CategoricalFeature)
    shares = dict(zip(channel.categories, channel.reference_share, strict=False))
    for name, share in zip(intent.CHANNELS, intent.CHANNEL_SHARES, strict=True):
        assert shares[name] == pytest.approx(share, abs=0.03)
