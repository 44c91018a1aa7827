"""Build the example reference profiles: ``python scripts/build_examples.py [--check]``.

``examples/intent/reference.json`` profiles the intent model's watched features (text length,
token count, out-of-vocabulary share, channel) on every shipped training utterance typed
:data:`INTENT_COPIES` times the way users type it, with the model's predicted intent as the output
and the true intent as the labels. ``examples/fare/reference.json`` profiles a large held-out draw
of trips (not the model's training trips), with the fitted model's predicted fare as the output and
the true fare as the labels, segmented by the hour of the day. The output is always the model's
predictions: output drift compares live predictions with it, and a model predicts a different
distribution than its labels. Every random draw has a fixed seed, so a rebuild gives the same
profiles (same :meth:`~exporter.profile.ReferenceProfile.fingerprint`); a file whose fingerprint
is unchanged is not rewritten. ``--check`` only reports stale files and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from exporter.demo_models import fare, intent
from exporter.profile import ProfileError, ReferenceProfile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: Each training utterance appears this many times in the intent reference, each time with its
#: own typos and channel.
INTENT_COPIES = 5
INTENT_SEED = 11
#: Values kept per feature for the KS test; the fare reference has 200k rows, this keeps it small.
FARE_SAMPLE_SIZE = 2_000
#: The fare reference: held-out trips drawn with HOURLY_DEMAND like the training set, but ten
#: times as many, so that the quietest hour (4 a.m., under 1% of trips) still has more than
#: MIN_SEGMENT_ROWS of its own and every hour is compared with its own reference.
FARE_REFERENCE_TRIPS = 200_000
FARE_REFERENCE_SEED = 20_240_602
#: The fare model's context feature: trip durations (and so fares) follow the time of day.
FARE_SEGMENT_BY = "hour"

INTENT_NUMERIC = ("text_length", "token_count", "oov_share")
INTENT_CATEGORICAL = ("channel",)


def intent_profile() -> ReferenceProfile:
    """The reference of ``examples/intent``: derived features, predicted and true intents."""
    requests = intent.synthetic_requests(INTENT_COPIES * len(intent.load_utterances()), INTENT_SEED)
    records = requests[["text", "channel"]].to_dict("records")
    frame = pd.DataFrame([intent.derive_features(r) for r in records])
    frame["predicted_intent"] = [intent.predict(r)[0] for r in records]
    frame["intent"] = requests["intent"].to_numpy()
    return ReferenceProfile.from_frame(
        frame,
        numeric=INTENT_NUMERIC,
        categorical=INTENT_CATEGORICAL,
        prediction="predicted_intent",
        label="intent",
        target_kind="categorical",
    )


def fare_profile() -> ReferenceProfile:
    """The reference of ``examples/fare``: held-out trips, their predicted and true fares, with
    a reference per hour of the day (``segment_by``)."""
    trips = fare.synthetic_trips(FARE_REFERENCE_TRIPS, FARE_REFERENCE_SEED)
    trips["predicted_fare"] = fare.model().predict_frame(trips)
    return ReferenceProfile.from_frame(
        trips,
        numeric=fare.FEATURES,
        prediction="predicted_fare",
        label="fare",
        target_kind="numeric",
        sample_size=FARE_SAMPLE_SIZE,
        segment_by=FARE_SEGMENT_BY,
    )


#: Example folder name -> how its reference is built.
PROFILES: dict[str, Callable[[], ReferenceProfile]] = {
    "intent": intent_profile,
    "fare": fare_profile,
}


def reference_path(name: str) -> Path:
    return EXAMPLES / name / "reference.json"


def _current_fingerprint(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return ReferenceProfile.load(path).fingerprint()
    except ProfileError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, build in PROFILES.items():
        path = reference_path(name)
        profile = build()
        if _current_fingerprint(path) == profile.fingerprint():
            print(f"{path.relative_to(ROOT)}: up to date ({profile.fingerprint()})")
            continue
        stale.append(path)
        if args.check:
            print(f"{path.relative_to(ROOT)}: stale, run python scripts/build_examples.py")
        else:
            profile.save(path)
            path.chmod(0o644)  # save() writes through a private temp file; the example is shared
            print(f"{path.relative_to(ROOT)}: written ({profile.fingerprint()})")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
