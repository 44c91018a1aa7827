"""Actions: the commands an actions file runs per alertname, and the threads that run them."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.errors import ExporterError
from exporter.receiver._payload import Status

log = logging.getLogger("exporter.receiver")

#: Timeout of an action that sets none.
DEFAULT_ACTION_TIMEOUT_SECONDS = 60.0
#: Actions running at the same time; more wait in a queue.
ACTION_WORKERS = 4

Outcome = Literal["success", "failure", "timeout"]


class ReceiverConfigError(ExporterError):
    """A bad actions file; the message names the file and the key."""


class AlertAction(BaseModel):
    """A command run for each new alert of one alertname (argv list, never a shell)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)
    timeout_seconds: float = Field(default=DEFAULT_ACTION_TIMEOUT_SECONDS, gt=0)
    on: tuple[Status, ...] = Field(default=("firing",), min_length=1)


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: YAML 1.1 reads the ``on:`` key as ``True``."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_actions(path: Path) -> dict[str, AlertAction]:
    """Read and validate an actions file: a mapping of alertname to :class:`AlertAction`.

    Raises :class:`ReceiverConfigError` naming the file, the key and the reason.
    """
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_Yaml12Loader)  # a SafeLoader subclass
    except (OSError, UnicodeDecodeError) as exc:
        raise ReceiverConfigError(f"cannot read the actions file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ReceiverConfigError(f"actions file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ReceiverConfigError(
            f"actions file {path}: expected a mapping of alertname to action, "
            f"e.g. 'ModelAccuracyDrop: {{command: [/usr/local/bin/retrain], timeout_seconds: 60}}'"
        )
    actions: dict[str, AlertAction] = {}
    problems: list[str] = []
    for name, spec in data.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{name!r}: an alertname must be a non-empty string")
            continue
        try:
            action = AlertAction.model_validate(spec)
        except ValidationError as exc:
            problems.extend(f"{name}.{field}: {reason}" for field, reason in _action_errors(exc))
            continue
        executable = action.command[0]
        if os.sep in executable:
            if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
                problems.append(f"{name}.command: {executable} is not an executable file")
        elif shutil.which(executable) is None:
            problems.append(f"{name}.command: {executable} is not found on PATH")
        actions[name] = action
    if problems:
        raise ReceiverConfigError(f"actions file {path}: " + "; ".join(problems))
    return actions


def _action_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = exc.errors()
    return [
        (".".join(str(p) for p in e["loc"]) or "(action)", e["msg"])
        for e in errors
        if e["type"] != "model_type"
    ] or [("(action)", "expected a mapping with command, timeout_seconds and on")]


def run_action(action: AlertAction, alert_json: bytes) -> Outcome:
    """Run ``action`` with ``alert_json`` on stdin; kill it and its children on timeout.

    The command is an argv list executed directly, never through a shell, and the alert reaches
    it only on stdin: nothing from the alert is placed in argv or the environment. Its stdout and
    stderr go to the receiver's own, so they land in the same log.
    """
    try:
        process = subprocess.Popen(
            action.command,
            stdin=subprocess.PIPE,
            # Its own process group: a timeout kills whatever the command started, too.
            start_new_session=True,
        )
    except OSError as exc:
        log.error("action %s could not start: %s", list(action.command), exc)
        return "failure"
    try:
        process.communicate(alert_json, timeout=action.timeout_seconds)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            process.kill()
        process.communicate()
        log.warning(
            "action %s timed out after %s s and was killed",
            list(action.command),
            action.timeout_seconds,
        )
        return "timeout"
    if process.returncode != 0:
        log.warning("action %s exited with %s", list(action.command), process.returncode)
        return "failure"
    return "success"


class ActionRunner:
    """Runs actions on worker threads so that the webhook answer never waits for them."""

    def __init__(
        self,
        actions: Mapping[str, AlertAction],
        on_outcome: Callable[[str, Outcome], None],
        *,
        workers: int = ACTION_WORKERS,
    ) -> None:
        self._actions = dict(actions)
        self._on_outcome = on_outcome
        self._executor = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alert-action")
            if self._actions
            else None
        )

    def action_for(self, alertname: str, status: str) -> AlertAction | None:
        action = self._actions.get(alertname)
        return action if action is not None and status in action.on else None

    def submit(self, alertname: str, action: AlertAction, alert_json: bytes) -> None:
        """Queue one run; never raises (a run that cannot be queued counts as a failure)."""
        if self._executor is None:
            return
        try:
            self._executor.submit(self._run, alertname, action, alert_json)
        except RuntimeError as exc:  # the executor is shutting down
            log.error("action for %s not started: %s", alertname, exc)
            self._on_outcome(alertname, "failure")

    def _run(self, alertname: str, action: AlertAction, alert_json: bytes) -> None:
        try:
            outcome = run_action(action, alert_json)
        except Exception:
            log.exception("action for %s failed inside the receiver", alertname)
            outcome = "failure"
        self._on_outcome(alertname, outcome)

    def close(self) -> None:
        """Wait for queued and running actions (each is bounded by its timeout)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
