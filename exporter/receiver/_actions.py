"""Actions: the commands an actions file runs per alertname, and how one command is run."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.errors import ExporterError
from exporter.receiver._payload import Status

log = logging.getLogger("exporter.receiver")

#: Timeout of an action that sets none.
DEFAULT_ACTION_TIMEOUT_SECONDS = 60.0
#: The environment variable that carries an action's idempotency key: the same for every run of
#: one alert and status, also after a restart (stdin stays the alert exactly as it was posted).
IDEMPOTENCY_KEY_ENV = "ALERT_IDEMPOTENCY_KEY"

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


def run_action(
    action: AlertAction,
    alert_json: bytes,
    *,
    key: str | None = None,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Outcome:
    """Run ``action`` with ``alert_json`` on stdin; kill it and its children on timeout.

    The command is an argv list executed directly, never through a shell, and the alert reaches
    it only on stdin: nothing from the alert is placed in argv or the environment, except
    ``key`` (32 hex digits, see :func:`exporter.receiver.store.idempotency_key`) in
    ``ALERT_IDEMPOTENCY_KEY``. ``started`` is given the process once it runs (the runner kills
    its group when shutdown cannot wait any longer). Its stdout and stderr go to the receiver's
    own, so they land in the same log.
    """
    env = None if key is None else os.environ | {IDEMPOTENCY_KEY_ENV: key}
    try:
        process = subprocess.Popen(
            action.command,
            stdin=subprocess.PIPE,
            env=env,
            # Its own process group: a timeout kills whatever the command started, too.
            start_new_session=True,
        )
    except OSError as exc:
        log.error("action %s could not start: %s", list(action.command), exc)
        return "failure"
    if started is not None:
        started(process)
    try:
        process.communicate(alert_json, timeout=action.timeout_seconds)
    except subprocess.TimeoutExpired:
        kill_group(process)
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


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` and whatever it started (its own process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        process.kill()
