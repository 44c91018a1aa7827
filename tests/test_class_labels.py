"""The class cap holds across workers and restarts, and every worker numbers the classes alike."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import ModelMonitor, ReferenceProfile
from exporter.class_labels import ClassLabels


def test_in_memory_the_first_cap_classes_get_slots_in_order() -> None:
    labels = ClassLabels(2)
    assert [labels.index(n) for n in ("a", "b", "c", "a")] == [0, 1, None, 0]
    assert labels.names() == ["a", "b"]
    assert labels.get("c") is None and "c" not in labels


def test_two_workers_share_the_cap_and_the_order(tmp_path: Path) -> None:
    path = tmp_path / "classes.jsonl"
    first, second = ClassLabels(3, path), ClassLabels(3, path)
    assert first.index("cat") == 0
    assert second.index("dog") == 1  # it sees "cat" first: the slots line up
    assert first.index("dog") == 1
    assert second.index("bird") == 2
    assert first.index("owl") is None  # the cap counts both workers' classes
    assert first.names() == second.names() == ["cat", "dog", "bird"]


def test_a_restarted_worker_keeps_the_classes_it_learned(tmp_path: Path) -> None:
    path = tmp_path / "classes.jsonl"
    before = ClassLabels(2, path)
    before.index("cat")
    before.index("dog\nwith a newline")
    after = ClassLabels(2, path)  # the same worker after kill -9: a new process, the same file
    assert after.names() == ["cat", "dog\nwith a newline"]
    assert after.index("bird") is None


def test_a_line_torn_by_a_killed_worker_is_skipped_by_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "classes.jsonl"
    ClassLabels(5, path).index("cat")
    with open(path, "ab") as out:
        out.write(b'"do')  # killed in the middle of appending "dog"
    reader = ClassLabels(5, path)
    assert reader.names() == ["cat"]
    assert reader.index("bird") == 1
    assert ClassLabels(5, path).names() == ["cat", "bird"]


def test_an_unusable_file_caps_in_memory_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    labels = ClassLabels(2, blocker / "classes.jsonl")
    assert [labels.index(n) for n in ("a", "b", "c")] == [0, 1, None]


def _learn(path: str, names: list[str], queue: multiprocessing.Queue) -> None:
    labels = ClassLabels(50, path)
    queue.put({name: labels.index(name) for name in names})


def test_processes_learning_at_once_never_pass_the_cap_and_agree(tmp_path: Path) -> None:
    path = str(tmp_path / "classes.jsonl")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_learn, args=(path, [f"w{w}-{i}" for i in range(40)], queue))
        for w in range(3)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    merged = ClassLabels(50, path)
    assert len(merged) == 50  # 120 distinct classes offered, 50 kept
    for result in results:
        for name, slot in result.items():
            assert slot == merged.get(name), name  # every process got the shared slot


# -- through the monitor ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 2000), "label": rng.choice(["cat", "dog"], 2000)})
    return ReferenceProfile.from_frame(frame, ["x"], [], target="label")


def _predicted_labels(registry: CollectorRegistry) -> set[str]:
    found = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("model_predictions_total{"):
            found.add(line.split('predicted="', 1)[1].split('"', 1)[0])
    return found


def test_workers_and_a_restart_share_one_class_cap(
    tmp_path: Path, profile: ReferenceProfile
) -> None:
    def worker() -> tuple[ModelMonitor, CollectorRegistry]:
        registry = CollectorRegistry()
        monitor = ModelMonitor(
            "m", reference=profile, registry=registry, max_classes=4, state_dir=tmp_path
        )
        return monitor, registry

    (first, first_registry), (second, second_registry) = worker(), worker()
    first.observe({"x": 0.0}, "bird")  # cat and dog from the reference, bird: 3 of 4
    second.observe({"x": 0.0}, "owl")  # 4 of 4
    second.observe({"x": 0.0}, "emu")  # past the cap in every worker
    first.observe({"x": 0.0}, "emu")
    restarted, restarted_registry = worker()  # a worker replaced after kill -9
    restarted.observe({"x": 0.0}, "yak")
    labels = (
        _predicted_labels(first_registry)
        | _predicted_labels(second_registry)
        | _predicted_labels(restarted_registry)
    )
    assert labels == {"cat", "dog", "bird", "owl", "__other__"}
