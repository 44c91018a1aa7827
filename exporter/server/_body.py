"""The request body, before any field is looked at: its size bounded by :class:`BodyLimit` (a
413 by header or while streaming) and its decoding as JSON by :func:`parse_json`, which refuses
with 400 what no model should see (deep nesting, NaN and infinity, numbers past a double or
integers of hundreds of digits, lone surrogates)."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exporter.server._answers import RequestError
from exporter.text import any_lone_surrogate

#: Maximum nesting of a JSON body; deeper is refused before the model sees it.
MAX_JSON_DEPTH = 32
#: Longest integer literal accepted: far past a double (309 digits), short of Python's 4300.
MAX_INTEGER_DIGITS = 400


#: Bodies up to this size are parsed on the event loop, larger ones in a worker thread, where the
#: interpreter's switch interval lets the loop answer other requests (a health probe, small
#: predictions) meanwhile. Measured on the 2-core machine of benchmarks/README.md: the hop to a
#: thread adds about 0.3 ms; the checked parse of a body of numbers takes 0.08 ms at 1 KiB,
#: 0.45 ms at 4 KiB, 1.2 ms at 16 KiB and 4.9 ms at 64 KiB. A single prediction's body (well under
#: 1 KiB) stays on the loop; from 4 KiB on, the parse would hold the loop longer than the hop
#: delays its own request.
PARSE_INLINE_BYTES = 4 * 1024


async def parse_json_body(body: bytes) -> Any:
    """:func:`parse_json` for a request handler, off the event loop when ``body`` is large."""
    if len(body) <= PARSE_INLINE_BYTES:
        return parse_json(body)
    return await run_in_threadpool(parse_json, body)


def parse_json(body: bytes) -> Any:
    """The body as a JSON document; a :class:`RequestError` (400) saying what is wrong."""
    if not body.strip():
        raise RequestError(400, "body", "the request body is empty; send a JSON object")
    try:
        document = json.loads(
            body,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except UnicodeDecodeError:
        raise RequestError(400, "body", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, "body", f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise RequestError(400, "body", f"JSON nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:
        raise RequestError(400, "body", str(exc)) from None
    if _depth(document, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RequestError(400, "body", f"JSON nested deeper than {MAX_JSON_DEPTH}")
    # A lone surrogate (from a \\u escape, or encoded: json.loads decodes bytes with
    # surrogatepass) has no UTF-8 form: it could be neither answered, stored nor exported.
    if (b"\\u" in body or not body.isascii()) and any_lone_surrogate(document):
        raise RequestError(400, "body", "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send null for a missing number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of the range of a double")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is too long")
    return int(text)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, stopping once past ``limit``."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


# -- pure ASGI body limit (BaseHTTPMiddleware would halve throughput) ------------------------------


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        started = refused = False

        async def limited() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answered here: an exception raised into the app would reach Starlette's
                    # error middleware first, which answers 500 before it re-raises.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}  # the app sees the client gone
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; drop the app's reaction to the cut body
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except ClientDisconnect:
            pass  # the client left half-way (or was cut off above): nobody to answer
        except Exception:
            if not refused:
                raise  # the app's own failure: uvicorn logs it

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": [{"field": "body", "reason": f"larger than {self.limit} bytes"}]}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
