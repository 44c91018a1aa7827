"""Bearer tokens and TLS for the two HTTP servers (``serve`` and ``receiver``).

Tokens are read from files only, one per line, never from the command line, the config or the
environment, so they show in no ``ps`` output, no repository and no log: errors about a token file
name the file and a line number, never its content. Several lines are several valid tokens, so a
token is rotated without downtime (add the new one, move the clients, remove the old one); a
server notices a changed file within :data:`RELOAD_CHECK_SECONDS`, which is also how a Kubernetes
Secret mounted as a volume is updated.

:class:`BearerAuth` is a pure ASGI middleware (as :class:`exporter.server.BodyLimit`): deny by
default, with the paths that stay open (probes, the API description, ``/metrics`` unless asked
otherwise) listed explicitly, so an endpoint added later is protected without anyone thinking of it.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import ssl
import stat
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from exporter.errors import ExporterError

log = logging.getLogger(__name__)

#: A token file larger than this is refused unread (a file of tokens is a few hundred bytes).
MAX_TOKEN_FILE_BYTES = 65_536
#: How often a server looks at its token file for a rotation: one stat, a read only on a change.
RELOAD_CHECK_SECONDS = 1.0
#: Shorter tokens are accepted with a warning; ``openssl rand -hex 32`` gives 64 characters.
MIN_TOKEN_LENGTH = 16
#: The field a 401 names (the header's usual spelling) and the challenge RFC 6750 asks for.
AUTH_FIELD = "Authorization"
CHALLENGE = b"Bearer"
MISSING = "missing bearer token"
WRONG = "wrong bearer token"
#: The API description stays readable without a token (it holds no data).
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
#: Probes stay open: a kubelet or a load balancer sends no token.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class TokenFileError(ExporterError, ValueError):
    """A token file that cannot be used; the message names the file, never a token."""


class TLSError(ExporterError, ValueError):
    """A certificate or key that cannot be loaded; the message names the file."""


# -- token files ------------------------------------------------------------------------------


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens in ``path``: one per line (``\n`` or ``\r\n``), spaces and tabs around a token and
    blank lines ignored; any other character outside visible ASCII refuses the file."""
    try:
        if path.stat().st_size > MAX_TOKEN_FILE_BYTES:
            raise TokenFileError(
                f"the token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenFileError(f"the token file {path} is not UTF-8 text") from None
    tokens: list[bytes] = []
    # Lines end at "\n" only, and only ASCII blanks around a token are dropped: str.splitlines()
    # and str.strip() also act on \v, \f, \x1c-\x1e, U+0085, U+2028 and U+2029, which made
    # "abc<VT>def..." the two tokens "abc" and "def..." instead of a refused line.
    for number, line in enumerate(text.split("\n"), start=1):
        token = line.strip(" \t\r")
        if not token:
            continue
        # Visible ASCII only: what an HTTP header carries unchanged. The line number, not the
        # line, goes into the message.
        if not all("!" <= ch <= "~" for ch in token):
            raise TokenFileError(
                f"the token file {path}: line {number} holds a space or a character a bearer "
                "token cannot carry; put one token per line (letters, digits, -._~+/=)"
            )
        tokens.append(token.encode("ascii"))
    if not tokens:
        raise TokenFileError(f"the token file {path} is empty")
    return tuple(dict.fromkeys(tokens))


def readable_by_others(path: Path, what: str) -> str | None:
    """A warning when ``path`` is readable by every user of the machine, else ``None``."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if not mode & stat.S_IROTH:
        return None
    return (
        f"the {what} {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
        f"restrict it, e.g. chmod 600 {path}"
    )


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file is rewritten or replaced (also through a symlink swap)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


class BearerTokens:
    """The tokens a server accepts; from a file, re-read when the file changes.

    A changed file that cannot be used (empty, unreadable, half written) keeps the previous
    tokens and logs a warning: a rotation mistake neither locks every client out nor opens the
    server. Comparisons take the same time whichever byte differs (``hmac.compare_digest``), and
    every token is compared, so the answer's timing tells nothing about the tokens.
    """

    def __init__(
        self,
        tokens: Iterable[bytes | str],
        *,
        path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        accepted = tuple(t.encode("ascii") if isinstance(t, str) else t for t in tokens)
        if not accepted or not all(accepted):
            raise ValueError("at least one token is needed, and no token may be empty")
        self._tokens = accepted
        self._path = path
        self._clock = clock
        self._signature = _signature(path) if path is not None else None
        self._next_check = clock() + RELOAD_CHECK_SECONDS

    @classmethod
    def from_file(cls, path: Path, *, clock: Callable[[], float] = time.monotonic) -> BearerTokens:
        """Read ``path`` (raises :class:`TokenFileError`) and follow its changes."""
        return cls(read_tokens(path), path=path, clock=clock)

    @property
    def path(self) -> Path | None:
        return self._path

    def warnings(self) -> list[str]:
        """What a careful operator wants to hear at start: loose permissions, short tokens."""
        found = []
        if self._path is not None:
            loose = readable_by_others(self._path, "token file")
            if loose:
                found.append(loose)
        short = sum(1 for token in self._tokens if len(token) < MIN_TOKEN_LENGTH)
        if short:
            where = f" in {self._path}" if self._path is not None else ""
            found.append(
                f"{short} token(s){where} are shorter than {MIN_TOKEN_LENGTH} characters; "
                "generate tokens with e.g. `openssl rand -hex 32`"
            )
        return found

    def refusal(self, authorization: bytes | None) -> str | None:
        """``None`` when the ``Authorization`` header carries an accepted bearer token, else
        why not (:data:`MISSING` or :data:`WRONG`)."""
        given = _credentials(authorization)
        if given is None:
            return MISSING
        matched = False
        for token in self._current():
            matched |= hmac.compare_digest(token, given)
        return None if matched else WRONG

    def _current(self) -> tuple[bytes, ...]:
        if self._path is not None:
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + RELOAD_CHECK_SECONDS
                self._reload_if_changed(self._path)
        return self._tokens

    def _reload_if_changed(self, path: Path) -> None:
        signature = _signature(path)
        if signature == self._signature:
            return
        # Remembered even when the read fails, so a broken file is reported once, not per second.
        self._signature = signature
        try:
            tokens = read_tokens(path)
        except TokenFileError as exc:
            log.warning("%s; still accepting the tokens read before", exc)
            return
        self._tokens = tokens
        log.warning("token file %s changed: %d token(s) accepted from now on", path, len(tokens))


def _credentials(header: bytes | None) -> bytes | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive), or ``None``."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(b" ")
    credentials = credentials.strip()
    if scheme.lower() != b"bearer" or not credentials:
        return None
    return credentials


# -- the middleware ---------------------------------------------------------------------------


class BearerAuth:
    """Every request outside ``open_paths`` needs an accepted bearer token, else a 401.

    The 401 is ``{"detail": [{"field": "Authorization", "reason": ...}]}`` with
    ``WWW-Authenticate: Bearer``, before the body is read. Nothing here logs a header.
    """

    def __init__(self, app: ASGIApp, *, tokens: BearerTokens, open_paths: Collection[str]) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        reason = self.tokens.refusal(header)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
        else:
            await _unauthorized(send, reason)


async def _unauthorized(send: Send, reason: str) -> None:
    body = json.dumps({"detail": [{"field": AUTH_FIELD, "reason": reason}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", CHALLENGE),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def require_bearer(app: FastAPI, tokens: BearerTokens, open_paths: Collection[str]) -> None:
    """Protect ``app`` with :class:`BearerAuth` and say so in its OpenAPI (``/docs`` then offers
    "Authorize" and lists the 401 of every protected operation)."""
    app.add_middleware(BearerAuth, tokens=tokens, open_paths=open_paths)
    build = app.openapi
    opened = frozenset(open_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare_bearer(build(), opened)
        return build()

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_bearer(schema: dict[str, Any], open_paths: frozenset[str]) -> None:
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer"}
    for path, operations in schema.get("paths", {}).items():
        if path in open_paths:
            continue
        for operation in operations.values():
            if isinstance(operation, dict):
                operation["security"] = [{"bearer": []}]
                operation.setdefault("responses", {}).setdefault(
                    "401", {"description": "Missing or wrong bearer token."}
                )


# -- TLS --------------------------------------------------------------------------------------


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ssl-certfile`` and ``--ssl-keyfile``, handed to uvicorn."""
    parser.add_argument(
        "--ssl-certfile", type=Path, default=None,
        help="serve HTTPS with this PEM certificate (chain); it may also hold the key",
    )  # fmt: skip
    parser.add_argument(
        "--ssl-keyfile", type=Path, default=None,
        help="the certificate's PEM private key, unencrypted (keep it chmod 600)",
    )  # fmt: skip


def check_tls(certfile: Path | None, keyfile: Path | None) -> list[str]:
    """Load the certificate and key once, so a mistake is one line before anything listens;
    returns warnings (a key readable by every user). Raises :class:`TLSError`."""
    if certfile is None:
        if keyfile is not None:
            raise TLSError("--ssl-keyfile needs --ssl-certfile")
        return []

    def refuse_password() -> str:
        # OpenSSL would otherwise ask on the terminal; a password in argv would be a leak.
        raise TLSError(f"{keyfile or certfile}: the private key is encrypted; give an "
                       "unencrypted key file that only the service's user can read")  # fmt: skip

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=refuse_password)
    except ssl.SSLError as exc:  # before OSError, of which it is a subclass
        raise TLSError(f"{certfile}: not a usable PEM certificate and matching key "
                       f"({exc.reason or exc})") from None  # fmt: skip
    except OSError as exc:
        files = f"{certfile}" + (f", {keyfile}" if keyfile else "")
        raise TLSError(f"cannot read the TLS certificate or key ({files}): "
                       f"{exc.strerror or exc}") from None  # fmt: skip
    loose = readable_by_others(keyfile or certfile, "TLS key file")
    return [loose] if loose else []
