"""The README's library quick start, served live: `python examples/quickstart.py`.

Builds a reference from synthetic training data, serves /metrics on 127.0.0.1, and sends traffic
whose `amount` feature drifts after the first minute, so PSI, KS and z-score rise in /metrics.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, start_http_server

from exporter import ModelMonitor, ReferenceProfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 20_000),
            "country": rng.choice(["fr", "de", "es"], 20_000, p=[0.5, 0.3, 0.2]),
            "label": rng.choice(["ok", "fraud"], 20_000, p=[0.97, 0.03]),
        }
    )

    def score(features: dict[str, object]) -> tuple[str, float]:
        p_fraud = 0.9 if float(features["amount"]) > 400 else 0.02  # type: ignore[arg-type]
        return ("fraud", p_fraud) if p_fraud > 0.5 else ("ok", 1 - p_fraud)

    # Output drift compares live predictions with the model's predictions on the training rows.
    train["prediction"] = [score({"amount": amount})[0] for amount in train["amount"]]
    reference = ReferenceProfile.from_frame(
        train, ["amount"], ["country"], prediction="prediction", label="label"
    )
    registry = CollectorRegistry()
    monitor = ModelMonitor("fraud", version="v1", reference=reference, registry=registry,
                           windows=("1m", "5m", "1h"), drift_cache_seconds=2)  # fmt: skip

    @monitor.instrument
    def predict(features: dict[str, object]) -> tuple[str, float]:
        time.sleep(rng.uniform(0.001, 0.004))
        return score(features)

    server, thread = start_http_server(args.port, addr="127.0.0.1", registry=registry)
    print(f"metrics: http://127.0.0.1:{args.port}/metrics  (Ctrl-C stops)")
    started = time.monotonic()
    try:
        while not args.duration or time.monotonic() - started < args.duration:
            elapsed = time.monotonic() - started
            mean = 3.0 if elapsed < 60 else 3.8  # after a minute, amounts drift upwards
            country = str(rng.choice(["fr", "de", "es"], p=[0.5, 0.3, 0.2]))
            predict({"amount": float(rng.lognormal(mean, 1)), "country": country})
            time.sleep(0.002)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)


if __name__ == "__main__":
    main()
