"""What the demo stack runs on: the checkout it reads the rules, the Alertmanager config and the
examples from, and the Prometheus and Alertmanager configs it writes for its own servers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ExporterError

#: In the demo no alert waits longer than this before firing (the real rules wait longer).
DEMO_MAX_FOR = "30s"
#: Scrape and rule-evaluation interval of the demo's Prometheus.
DEMO_INTERVAL = "5s"
#: The fare service's config in the ``canary`` scenario: the primary with a canary answering
#: 10% of the requests (the fare plus 15%: worse on MAE) and a shadow as good as the primary.
CANARY_CONFIG = "examples/fare/monitor-canary.yml"
#: Files of the checkout the demo reads.
CHECKOUT_FILES = (
    "prometheus/rules", "alertmanager/alertmanager.yml", "examples/fare/monitor.yml", CANARY_CONFIG,
)  # fmt: skip
#: The ``exporter`` package's directory: an editable install runs from inside a checkout.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class DemoError(ExporterError):
    """Something the user can fix (a missing checkout file, a service that did not start)."""


def find_checkout(start: Path | None = None) -> Path:
    """The repository checkout the demo runs from: ``start`` (default: the current directory) or
    the nearest directory above it that holds the rules, the Alertmanager config and the
    examples; then the directory above this package (an editable install)."""
    here = (start or Path.cwd()).resolve()
    candidates = [here, *here.parents, PACKAGE_DIR.parent]
    for candidate in candidates:
        if all((candidate / needed).exists() for needed in CHECKOUT_FILES):
            return candidate
    raise DemoError(
        "the demo stack needs a checkout of the repository (prometheus/rules, alertmanager/, "
        "examples/); clone it and run `make demo` in it"
    )


def service_config(scenario: str, model: str) -> str:
    """The config (relative to the checkout) the demo serves ``model`` with in ``scenario``.

    Only ``canary`` runs the fare model with candidates; every other scenario, ``all``
    included, keeps the plain configs, so a canary's comparison never shows up among the
    alerts of a fault it has nothing to do with.
    """
    if scenario == "canary" and model == "fare":
        return CANARY_CONFIG
    return f"examples/{model}/monitor.yml"


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
    """The demo's Prometheus config. ``rules_dir`` must be absolute: Prometheus resolves a
    relative rule path against the directory of its config file, not its working directory."""
    if not rules_dir.is_absolute():
        raise ValueError(f"rules_dir must be absolute, got {rules_dir}")
    config: dict[str, object] = {
        "global": {"scrape_interval": DEMO_INTERVAL, "evaluation_interval": DEMO_INTERVAL},
        "rule_files": [str(rules_dir / "*.yml")],
        "scrape_configs": [
            {"job_name": "model-exporter", "static_configs": [{"targets": targets}]},
            {"job_name": "model-alert-receiver", "static_configs": [{"targets": [receiver]}]},
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def alertmanager_config(root: Path, receiver_url: str, token_file: Path) -> dict[str, object]:
    """The project's routing and inhibition, delivering only to the local receiver.

    Slack and email need secrets this demo does not have, so their receivers are kept (the
    routes name them) but left without integrations.
    """
    config = yaml.safe_load((root / "alertmanager" / "alertmanager.yml").read_text())
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
    _shorten_group_timers(config["route"])
    return dict(config)


def _shorten_group_timers(route: dict[str, Any], *, root: bool = True) -> None:
    """The demo's group timers (10 s wait, 30 s interval) on the root route and on every route
    that sets its own (the model-exporter subtree does), so a demo's alert is notified within
    seconds rather than after the production timers."""
    for key, value in (("group_wait", "10s"), ("group_interval", "30s")):
        if root or key in route:
            route[key] = value
    for child in route.get("routes", []):
        _shorten_group_timers(child, root=False)
