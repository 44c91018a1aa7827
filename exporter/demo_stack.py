"""``model-exporter demo-stack`` (what ``make demo`` runs): the whole stack on 127.0.0.1.

Starts the two example services (intent classifier and taxi-fare regressor), the webhook receiver,
and, when their binaries are installed, Prometheus with the project's rules and Alertmanager
delivering to the receiver; then sends the demo traffic, prints where to look, and stops
everything on Ctrl-C or when the traffic ends. Run it from a checkout of the repository: it reads
the rule and Alertmanager files from there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
#: Preferred ports, the ones the docs and compose file use; a busy one is replaced by a free one.
PORTS = {"intent": 8000, "fare": 8001, "receiver": 9099, "prometheus": 9090, "alertmanager": 9093}
#: In the demo no alert waits longer than this before firing (the real rules wait 2m to 2h).
DEMO_MAX_FOR = "1m"


class DemoError(Exception):
    """Something the user can fix (a missing checkout file, a service that did not start)."""


@dataclass
class Stack:
    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], ready_url: str) -> None:
        log = self.directory / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.processes[name] = process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited at start (log {log}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise DemoError(f"{name} did not become ready within 60 s (log {log})")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


def _port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def shorten_for(rules_text: str, longest: str = DEMO_MAX_FOR) -> str:
    """Rule file text with every ``for:`` longer than ``longest`` cut to it."""
    from exporter.windows import parse_duration

    limit = parse_duration(longest)

    def cut(match: re.Match[str]) -> str:
        value = match.group(2)
        try:
            seconds = parse_duration(value)
        except ValueError:
            return match.group(0)
        return f"{match.group(1)}{longest if seconds > limit else value}"

    return re.sub(r"^(\s*for:\s*)(\S+)\s*$", cut, rules_text, flags=re.M)


def prometheus_config(
    targets: list[str], receiver: str, alertmanager: str | None, rules_dir: Path
) -> dict[str, object]:
    config: dict[str, object] = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules_dir / "*.yml")],
        "scrape_configs": [
            {"job_name": "model-exporter", "static_configs": [{"targets": targets}]},
            {"job_name": "model-alert-receiver", "static_configs": [{"targets": [receiver]}]},
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def alertmanager_config(receiver_url: str, token_file: Path) -> dict[str, object]:
    """The project's routing and inhibition, delivering only to the local receiver.

    Slack and email need secrets this demo does not have, so their receivers are kept (the
    routes name them) but left without integrations.
    """
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    config.pop("templates", None)
    config["global"] = {"resolve_timeout": "5m"}
    for receiver in config.get("receivers", []):
        webhook = bool(receiver.get("webhook_configs"))
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        if webhook:
            receiver["webhook_configs"] = [
                {
                    "url": receiver_url,
                    "send_resolved": True,
                    "http_config": {
                        "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                    },
                }
            ]
    route = config["route"]
    route["group_wait"], route["group_interval"] = "10s", "30s"
    return dict(config)


def _require_checkout() -> None:
    for needed in ("prometheus/rules", "alertmanager/alertmanager.yml", "examples/fare"):
        if not (ROOT / needed).exists():
            raise DemoError(f"{ROOT / needed} is missing: run the demo from a repository checkout")


def run_stack(scenario: str, duration: float, data_dir: Path) -> int:
    _require_checkout()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    stack = Stack(data_dir)
    python = [sys.executable, "-m", "exporter.cli"]
    ports = {name: _port(port) for name, port in PORTS.items()}
    try:
        for model in ("intent", "fare"):
            port = ports[model]
            stack.start(
                model,
                [*python, "serve", "--config", str(ROOT / "examples" / model / "monitor.yml"),
                 "--port", str(port), "--data-dir", str(data_dir / model), "--quiet"],
                f"http://127.0.0.1:{port}/healthz",
            )  # fmt: skip
            stack.urls[f"{model} /metrics"] = f"http://127.0.0.1:{port}/metrics"
            stack.urls[f"{model} /docs"] = f"http://127.0.0.1:{port}/docs"
        token_file = data_dir / "receiver-token"
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
        stack.start(
            "receiver",
            [*python, "receiver", "--port", str(ports["receiver"]), "--data-dir",
             str(data_dir / "receiver"), "--token-file", str(token_file)],
            f"http://127.0.0.1:{ports['receiver']}/healthz",
        )  # fmt: skip
        stack.urls["receiver (stored alerts)"] = f"http://127.0.0.1:{ports['receiver']}/alerts"
        _start_monitoring(stack, ports, token_file)
        print("\nThe demo stack is up:")
        for name, url in stack.urls.items():
            print(f"  {name:<26} {url}")
        # GET /alerts needs the receiver's token, so a browser gets 401: show the one-liner.
        alerts = stack.urls["receiver (stored alerts)"]
        print(f'  stored alerts: curl -H "Authorization: Bearer $(cat {token_file})" {alerts}')
        print(f"\nSending '{scenario}' traffic for {duration:.0f} s (Ctrl-C stops everything).\n")
        return _traffic(ports, scenario, duration)
    except KeyboardInterrupt:
        print("\nstopping the demo stack")
        return 0
    finally:
        stack.stop()


def _start_monitoring(stack: Stack, ports: dict[str, int], token_file: Path) -> None:
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
        config.write_text(yaml.safe_dump(alertmanager_config(receiver_url, token_file)))
        am_address = f"127.0.0.1:{ports['alertmanager']}"
        stack.start(
            "alertmanager",
            [alertmanager, f"--config.file={config}", f"--web.listen-address={am_address}",
             "--cluster.listen-address=", f"--storage.path={stack.directory / 'am-data'}"],
            f"http://{am_address}/-/ready",
        )  # fmt: skip
        stack.urls["Alertmanager"] = f"http://{am_address}/#/alerts"
    if prometheus:
        rules_dir = stack.directory / "rules"
        rules_dir.mkdir()
        for rule_file in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
            (rules_dir / rule_file.name).write_text(shorten_for(rule_file.read_text()))
        targets = [f"127.0.0.1:{ports['intent']}", f"127.0.0.1:{ports['fare']}"]
        config_path = stack.directory / "prometheus.yml"
        config_path.write_text(
            yaml.safe_dump(
                prometheus_config(targets, f"127.0.0.1:{ports['receiver']}", am_address, rules_dir)
            )
        )
        address = f"127.0.0.1:{ports['prometheus']}"
        stack.start(
            "prometheus",
            [prometheus, f"--config.file={config_path}", f"--web.listen-address={address}",
             f"--storage.tsdb.path={stack.directory / 'prom-data'}"],
            f"http://{address}/-/ready",
        )  # fmt: skip
        query = "model_feature%3Amodel_feature_psi%3A1h"
        stack.urls["Prometheus: fleet PSI"] = f"http://{address}/graph?g0.expr={query}&g0.tab=0"
        stack.urls["Prometheus: alerts"] = f"http://{address}/alerts"


def _traffic(ports: dict[str, int], scenario: str, duration: float) -> int:
    from exporter import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(
        ["--target", f"http://127.0.0.1:{ports['intent']}", "--target",
         f"http://127.0.0.1:{ports['fare']}", "--scenario", scenario, "--duration", str(duration)]
    )  # fmt: skip
    return demo.run(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="all",
        choices=("steady", "drift", "degrade", "errors", "latency", "all"),
        help="what the traffic injects (default: all, in turn)",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic")
    parser.add_argument("--data-dir", default="data/demo", help="state and logs (wiped at start)")


def run(args: argparse.Namespace) -> int:
    try:
        return run_stack(args.scenario, args.duration, Path(args.data_dir))
    except DemoError as exc:
        print(f"model-exporter demo-stack: {exc}", file=sys.stderr)
        return 2
