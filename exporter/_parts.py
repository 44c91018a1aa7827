"""How a monitor is put together: its parts, each given what it needs and nothing more.

The parts are built in the order their series are first created (a metric lists its children in
the order they were made): the segment key and the inputs, the output, the classes, the ground
truth; then the streams that tie their windows to one tick, and the snapshots that read them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter._calls import Calls
from exporter._classes import Classes
from exporter._exchange import WindowExchange, safe
from exporter._ground_truth import GroundTruth
from exporter._inputs import Inputs, segment_context, watched_features
from exporter._outputs import Outputs, output_watch
from exporter._snapshot import DriftSnapshots
from exporter._streams import MonitorStreams
from exporter.class_labels import ClassLabels
from exporter.metrics import Instruments
from exporter.outcomes import MemoryOutcomeStore, OutcomeStore
from exporter.profile import ReferenceProfile
from exporter.windows import Clock, WindowSpec


@dataclass(frozen=True)
class Parts:
    """The parts of one monitor; ``exchange`` is None unless several workers serve the model."""

    inputs: Inputs
    outputs: Outputs
    truth: GroundTruth
    calls: Calls
    streams: MonitorStreams
    exchange: WindowExchange | None
    classes: Classes
    snapshots: DriftSnapshots
    monitor_errors: Any


@dataclass(frozen=True)
class Settings:
    """What the parts are built from: the monitor's arguments, resolved."""

    name: str
    version: str
    regression: bool
    reference: ReferenceProfile | None
    features: Sequence[str] | None
    classes: Sequence[str] | None
    max_classes: int
    sample_size: int
    domains: Mapping[str, tuple[float, float]] | None
    confidence_cuts: tuple[float, float]
    seed: int
    outcomes: OutcomeStore | None
    state_dir: Path | None
    segment_by: str | None


def assemble(
    settings: Settings,
    specs: Sequence[WindowSpec],
    clock: Clock,
    window_clock: Clock,
    lock: threading.Lock,
    inst: Instruments,
    labels: tuple[str, str],
) -> Parts:
    """The parts of a monitor configured by ``settings``, their series created on ``inst``."""
    s = settings
    segments, key = segment_context(s.reference, s.segment_by, s.domains, inst, labels)
    watched = watched_features(s.reference, s.features, s.domains, s.segment_by)
    inputs = Inputs(s.reference, watched, s.domains, segments, key, inst, labels, specs,
                    s.sample_size, s.seed)  # fmt: skip
    profiled = s.reference.output if s.reference is not None else None
    output = output_watch(s.regression, profiled, inst, labels, specs, s.sample_size,
                          s.seed + len(watched), segments)  # fmt: skip
    exchange = None
    if s.state_dir is not None:
        exchange = WindowExchange(s.state_dir, s.name, s.version, s.sample_size, s.seed)
    # One list of classes for every worker of a service (a file in the shared state
    # directory): the cap counts all workers' classes and the performance slots line up.
    shared = s.state_dir is not None and not s.regression
    classes = Classes(ClassLabels(
        s.max_classes,
        s.state_dir / f"classes-{safe(s.name)}-{safe(s.version)}.jsonl"
        if shared and s.state_dir is not None
        else None,
    ), s.max_classes)  # fmt: skip
    outputs = Outputs(s.regression, output, classes, list(s.classes or []), inst, labels,
                      specs, s.seed, s.confidence_cuts)  # fmt: skip
    monitor_errors = inst.monitor_errors.labels(*labels)
    store = s.outcomes if s.outcomes is not None else MemoryOutcomeStore()
    truth = GroundTruth(s.name, s.version, s.regression, store, clock, classes, inst, labels,
                        specs, s.seed, lock, monitor_errors)  # fmt: skip
    streams = MonitorStreams(
        specs, window_clock, [*inputs.watches, *outputs.watches],
        {"performance": truth.performance, "confidences": outputs.confidences},
    )  # fmt: skip
    snapshots = DriftSnapshots(streams, exchange, truth, classes, lock, s.regression)
    calls = Calls(inst, labels, lock)
    return Parts(inputs, outputs, truth, calls, streams, exchange, classes, snapshots,
                 monitor_errors)  # fmt: skip
