"""``model-exporter demo-stack`` (what ``make demo`` runs): the whole stack on 127.0.0.1.

Starts the two example services (intent classifier and taxi-fare regressor; in the ``canary``
scenario the fare service also runs a worse canary version), the webhook receiver,
and, when their binaries are installed, Prometheus with the project's rules and Alertmanager
delivering to the receiver; then sends the demo traffic, prints each alert as it fires, and ends
with a table of which alerts every injected fault raised, how soon, and whether the receiver
stored the notification. It exits 1 when an injection raised none of its expected alerts.

It reads the rule files, the Alertmanager config and the examples from a checkout of the
repository: the current directory or one above it (an installed package has none of them).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import faulthandler
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import yaml

from exporter import demo
from exporter.demo import watch as demo_watch
from exporter.demo._stack_config import (
    DemoError,
    alertmanager_config,
    find_checkout,
    prometheus_config,
    service_config,
    shorten_for,
)

__all__ = [
    "DemoError",
    "add_arguments",
    "alertmanager_config",
    "find_checkout",
    "prometheus_config",
    "run",
    "run_stack",
    "service_config",
    "shorten_for",
]

#: Preferred ports, the ones the docs and compose file use; a busy one is replaced by a free one.
PORTS = {"intent": 8000, "fare": 8001, "receiver": 9099, "prometheus": 9090, "alertmanager": 9093}

#: How long to wait for Prometheus to evaluate every rule group once after it starts (the
#: demo's groups run every 5 s; the slow drift windows' every minute).
FIRST_EVALUATION_SECONDS = 20.0
START_TIMEOUT_SECONDS = 60.0
#: prctl(2) option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1
EXIT_NOT_CAUGHT = 1
EXIT_SETUP = 2
EXIT_INTERRUPTED = 130


@dataclass
class Stack:
    directory: Path
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)

    def start(self, name: str, argv: list[str], ready_url: str) -> None:
        log = self.directory / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.processes[name] = process
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited at start (log {log}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1, trust_env=False).status_code == 200:
                    return
            time.sleep(0.2)
        raise DemoError(
            f"{name} did not become ready within {START_TIMEOUT_SECONDS:.0f} s (log {log})"
        )

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running process the demo started (returns at once)."""
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)

    def stop(self) -> None:
        self.signal_all(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _die_with_parent() -> None:
    """In a child, before it runs: have Linux send it SIGTERM when the demo dies, however it
    dies (SIGKILL included), so no server outlives the demo that started it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _port(preferred: int) -> int:
    with socket.socket() as sock:
        # As the servers bind: connections of a previous run still in TIME_WAIT do not block it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


# -- what the installed Prometheus and Alertmanager serve ------------------------------------------


def _serves_page(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(url, timeout=5, trust_env=False, follow_redirects=True)
        return response.status_code == 200
    return False


def prometheus_ui(base: str) -> str | None:
    """The path prefix of Prometheus's web pages: ``""`` for the current UI (``/alerts``),
    ``"/classic"`` where only the classic UI is built in (Debian's 2.42 package), ``None``
    where neither answers."""
    for prefix in ("", "/classic"):
        if _serves_page(f"{base}{prefix}/alerts"):
            return prefix
    return None


def alertmanager_has_ui(base: str) -> bool:
    """Whether Alertmanager serves its web UI: Debian's package ships a placeholder page
    saying it has none."""
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(f"{base}/", timeout=5, trust_env=False)
        return response.status_code == 200 and "does not include a web" not in response.text
    return False


def check_rules(base: str, expected_groups: int, timeout: float = FIRST_EVALUATION_SECONDS) -> str:
    """Wait until Prometheus has loaded every rule group and evaluated them; a line saying so.

    Raises :class:`DemoError` when a group is missing or a rule fails: a demo whose rules are
    not loaded can raise no alert, and would otherwise end looking like a quiet success. Groups
    that evaluate less often than the demo's interval (the slow drift windows, every minute) may
    not have run yet when the timeout passes; that is said, not refused.
    """
    deadline = time.monotonic() + timeout
    groups: list[dict[str, object]] = []
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            answer = httpx.get(f"{base}/api/v1/rules", timeout=5, trust_env=False).json()
            groups = answer["data"]["groups"]
        rules = [r for g in groups for r in g.get("rules", [])]  # type: ignore[attr-defined]
        failing = [r for r in rules if r.get("health") == "err"]
        if failing:
            rule = failing[0]
            raise DemoError(
                f"Prometheus cannot evaluate rule {rule.get('name')}: {rule.get('lastError')}"
            )
        waiting = sum(r.get("health") != "ok" for r in rules)
        loaded = len(groups) >= expected_groups and rules
        if loaded and (not waiting or time.monotonic() >= deadline):
            alerts = sum(r.get("type") == "alerting" for r in rules)
            state = (
                "all evaluated without error"
                if not waiting
                else (
                    f"{len(rules) - waiting} evaluated without error, {waiting} not yet evaluated"
                )
            )
            return (
                f"Prometheus loaded {len(groups)} rule groups ({len(rules) - alerts} recording "
                f"rules, {alerts} alerts), {state}"
            )
        if time.monotonic() >= deadline:
            raise DemoError(
                f"Prometheus loaded {len(groups)} of {expected_groups} rule groups "
                f"(see {base}/api/v1/rules): no alert could fire"
            )
        time.sleep(0.5)


# -- the run ---------------------------------------------------------------------------------------


def run_stack(scenario: str, duration: float, data_dir: Path) -> int:
    root = find_checkout()
    data_dir = data_dir.resolve()
    phases = demo.schedule(scenario, duration)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    stack = Stack(data_dir, root)
    _Terminated.stack = stack
    python = [sys.executable, "-m", "exporter.cli"]
    ports = {name: _port(port) for name, port in PORTS.items()}
    watcher = None
    try:
        for model in ("intent", "fare"):
            port = ports[model]
            stack.start(
                model,
                [*python, "serve", "--config", str(root / service_config(scenario, model)),
                 "--port", str(port), "--data-dir", str(data_dir / model), "--quiet"],
                f"http://127.0.0.1:{port}/healthz",
            )  # fmt: skip
            stack.urls[f"{model} /metrics"] = f"http://127.0.0.1:{port}/metrics"
            stack.urls[f"{model} /docs"] = f"http://127.0.0.1:{port}/docs"
        token_file = data_dir / "receiver-token"
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
        receiver = f"http://127.0.0.1:{ports['receiver']}"
        stack.start(
            "receiver",
            [*python, "receiver", "--port", str(ports["receiver"]), "--data-dir",
             str(data_dir / "receiver"), "--token-file", str(token_file)],
            f"{receiver}/healthz",
        )  # fmt: skip
        # GET /alerts needs the receiver's token, so a browser would get 401: show the one-liner.
        stack.hints.append(
            f'stored alerts: curl -H "Authorization: Bearer $(cat {token_file})" {receiver}/alerts'
        )
        prometheus = _start_monitoring(stack, ports, token_file)
        print("\nThe demo stack is up:")
        for name, url in stack.urls.items():
            print(f"  {name:<26} {url}")
        for hint in stack.hints:
            print(f"  {hint}")
        short = demo_watch.too_short(phases) if prometheus else []
        if short:
            print(
                f"\nnote: each injection needs about {demo_watch.MIN_INJECTION_SECONDS:.0f} s to "
                f"raise its alert, and --duration {duration:g} gives "
                + ", ".join(f"{p.name} {p.end - p.start:.0f} s" for p in short)
                + f": expect some not to fire (`make demo` uses {_enough(scenario):.0f} s or more)."
            )
        print(f"\nSending '{scenario}' traffic for {duration:.0f} s (Ctrl-C stops everything).\n")
        started = time.monotonic()
        say = _printer()
        if prometheus:
            watcher = demo_watch.AlertWatcher(
                prometheus, receiver, token_file.read_text().strip(), say,
                clock=lambda: time.monotonic() - started,
            )  # fmt: skip
            watcher.start()
        summary = demo.run_demo(
            [f"http://127.0.0.1:{ports['intent']}", f"http://127.0.0.1:{ports['fare']}"],
            scenario, duration, out=sys.stdout,
        )  # fmt: skip
        print(demo.describe(summary))
        if watcher is not None and not summary["interrupted"]:
            watcher.wait_for_delivery()
        return _finish(phases, summary, watcher)
    except KeyboardInterrupt:
        print("\nstopping the demo stack")
        return EXIT_INTERRUPTED
    finally:
        try:
            if watcher is not None:
                watcher.stop()
        finally:
            stack.stop()


def _finish(
    phases: list[demo.Phase], summary: demo.DemoSummary, watcher: demo_watch.AlertWatcher | None
) -> int:
    seen, stored = watcher.snapshot() if watcher is not None else ([], set())
    ran = [p for p in phases if p.start < summary["seconds"]]
    found = demo_watch.detections(ran, summary["targets"], seen, stored)
    text, caught = demo_watch.report(found, checked=watcher is not None)
    print(f"\n{text}")
    if watcher is not None and any(p.name == "steady" for p in ran):
        # A deployment scenario (canary) has no steady stretch to raise a false alarm in.
        false = demo_watch.false_alarms(ran, seen)
        names = ", ".join(sorted({demo_watch.describe_key(s.key) for s in false}))
        print(f"Steady traffic raised {len(false)} alerts{': ' + names if names else ''}.")
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    return 0 if caught else EXIT_NOT_CAUGHT


def _enough(scenario: str) -> float:
    """The shortest ``--duration`` that gives every injection of ``scenario`` enough time."""
    if scenario == "all":
        return demo_watch.MIN_INJECTION_SECONDS * len(demo.ALL_PHASES)
    if scenario in demo.DEPLOYMENTS:
        return demo_watch.min_seconds(scenario)
    return demo.WARMUP_SECONDS + demo_watch.min_seconds(scenario)


def _printer() -> Callable[[str], None]:
    """Print a line from the watcher's thread; on a terminal, over the traffic's progress line
    (which is redrawn at its next tick)."""
    lock = threading.Lock()
    tty = sys.stdout.isatty()

    def say(text: str) -> None:
        with lock:
            sys.stdout.write(("\r\x1b[K" if tty else "") + text + "\n")
            sys.stdout.flush()

    return say


def _start_monitoring(stack: Stack, ports: dict[str, int], token_file: Path) -> str | None:
    """Start Alertmanager and Prometheus when installed; Prometheus's URL, or None."""
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    missing = [n for n, b in (("prometheus", prometheus), ("alertmanager", alertmanager)) if not b]
    if missing:
        print(
            f"note: {' and '.join(missing)} not installed; running the services and traffic only. "
            "Install them with `make tools` (Debian packages prometheus, "
            "prometheus-alertmanager) and run `make demo` again to get rules, alerts and routing."
        )
    am_address = None
    if alertmanager:
        config = stack.directory / "alertmanager.yml"
        receiver_url = f"http://127.0.0.1:{ports['receiver']}/alerts"
        config.write_text(yaml.safe_dump(alertmanager_config(stack.root, receiver_url, token_file)))
        am_address = f"127.0.0.1:{ports['alertmanager']}"
        am_url = f"http://{am_address}"
        stack.start(
            "alertmanager",
            [alertmanager, f"--config.file={config}", f"--web.listen-address={am_address}",
             f"--web.external-url={am_url}/", "--cluster.listen-address=",
             f"--storage.path={stack.directory / 'am-data'}"],
            f"{am_url}/-/ready",
        )  # fmt: skip
        if alertmanager_has_ui(am_url):
            stack.urls["Alertmanager"] = f"{am_url}/#/alerts"
        else:
            # Debian's package has no web UI: the API answers JSON in a browser, amtool a table.
            stack.urls["Alertmanager alerts (JSON)"] = f"{am_url}/api/v2/alerts"
            stack.hints.append(f"Alertmanager: amtool --alertmanager.url={am_url} alert query")
    if not prometheus:
        return None
    rules_dir = stack.directory / "rules"
    rules_dir.mkdir()
    groups = 0
    for rule_file in sorted((stack.root / "prometheus" / "rules").glob("*.yml")):
        text = shorten_for(rule_file.read_text())
        groups += len(yaml.safe_load(text).get("groups", []))
        (rules_dir / rule_file.name).write_text(text)
    targets = [f"127.0.0.1:{ports['intent']}", f"127.0.0.1:{ports['fare']}"]
    config_path = stack.directory / "prometheus.yml"
    config_path.write_text(
        yaml.safe_dump(
            prometheus_config(targets, f"127.0.0.1:{ports['receiver']}", am_address, rules_dir)
        )
    )
    address = f"127.0.0.1:{ports['prometheus']}"
    url = f"http://{address}"
    stack.start(
        "prometheus",
        [prometheus, f"--config.file={config_path}", f"--web.listen-address={address}",
         f"--web.external-url={url}/", f"--storage.tsdb.path={stack.directory / 'prom-data'}"],
        f"{url}/-/ready",
    )  # fmt: skip
    print(check_rules(url, groups))
    prefix = prometheus_ui(url)
    if prefix is None:
        stack.urls["Prometheus alerts (JSON)"] = f"{url}/api/v1/alerts"
        stack.urls["Prometheus rules (JSON)"] = f"{url}/api/v1/rules"
    else:
        query = quote("model_feature:model_feature_psi:1h", safe="")
        stack.urls["Prometheus: alerts"] = f"{url}{prefix}/alerts"
        stack.urls["Prometheus: rules"] = f"{url}{prefix}/rules"
        stack.urls["Prometheus: fleet PSI"] = f"{url}{prefix}/graph?g0.expr={query}&g0.tab=0"
    return url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="all", choices=demo.SCENARIOS,
        help="what the traffic injects (default: all but canary, in turn); canary serves the "
        "fare model with a worse canary version (examples/fare/monitor-canary.yml)",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    parser.add_argument("--data-dir", default="data/demo", help="state and logs (wiped at start)")


class _Terminated:
    """Whether SIGTERM arrived: the run then ends as an interrupted one, with status 143."""

    seen = False
    #: The running stack, told at once to stop when SIGTERM comes.
    stack: Stack | None = None


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    # Handled as Ctrl-C: inside the traffic's event loop asyncio turns SIGINT into a clean
    # cancellation of its tasks, elsewhere it is a KeyboardInterrupt; either way run_stack's
    # `finally` stops every process the demo started. Raising SystemExit here instead landed
    # inside whichever task was running and could be swallowed with it, leaving the children up;
    # Python's default SIGTERM would end this process at once and leave them running too.
    _Terminated.seen = True
    # Every server is told now, whatever the main flow is doing when the signal lands: even if
    # it were stuck, a supervisor's SIGKILL after its grace period would find them on the way
    # out (and Linux sends them SIGTERM when this process dies: _die_with_parent).
    if _Terminated.stack is not None:
        _Terminated.stack.signal_all(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)


def run(args: argparse.Namespace) -> int:
    # A shell starts a background job (`make demo &`, a CI script) with SIGINT ignored, and
    # Python keeps it ignored: asyncio then installs no Ctrl-C handler, the SIGINT that SIGTERM
    # is turned into reaches no one, and the traffic ran on until its duration ended.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    # `kill -USR1 PID` prints where every thread is: for a demo that does not stop.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        status = run_stack(args.scenario, args.duration, Path(args.data_dir))
    except Exception as exc:
        if _Terminated.seen:
            # SIGTERM stops the servers at once, so whatever was talking to them may fail on
            # the way out (the traffic's first probe answered "connection refused"): expected.
            return 128 + signal.SIGTERM
        if not isinstance(exc, (DemoError, demo.TargetError, ValueError)):
            raise
        print(f"model-exporter demo-stack: {exc}", file=sys.stderr)
        return EXIT_SETUP
    return 128 + signal.SIGTERM if _Terminated.seen else status
