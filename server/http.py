"""Small HTTP helpers shared by the route modules: strict bounded JSON bodies, strict JSON
responses, error responses, and
`add_api_routes` (every route both bare and under `/api/`).

A malformed body (not JSON, not the expected type, `NaN`/`Infinity` constants, a number too
large for a float such as `1e400`, nesting deeper than `MAX_JSON_DEPTH`, a lone surrogate in a
string) is the client's error: 400 with a message saying what was wrong, never a 500 and never a
traceback; a body over the limit (`--max-upload-size`, read as a stream) is 413. Responses go
through `strict_dumps`: strict JSON only (a non-finite float a node put in its output becomes
`null`), and big bodies are parsed (collector paused, see `gc_paused`) and serialised on a worker
thread so the event loop keeps answering other requests.
"""
from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from aiohttp import web

from server.keys import SETTINGS


MAX_JSON_DEPTH = 64
MAX_QUERY_INT = 2**63 - 1
_THREAD_BYTES = 256 * 1024  # parse / serialise bodies larger than this off the event loop


class StrictJSONError(ValueError):
    """The body is JSON-shaped but not strict JSON (non-finite numbers, too deep, lone surrogates)."""


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"the number {text[:40]} is too large (numbers must be finite)")
    return value


def _check_tree(value: Any) -> None:
    """Depth bound and no lone surrogates anywhere (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise StrictJSONError(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJSONError("a string holds a lone surrogate (not valid Unicode)") from None


_ABSOLUTE_PATH = re.compile(r"""(?:(?<![\w.:/])/|\b[A-Za-z]:[\\/]|\\\\)[^\s'"]*""")


def scrub_paths(text: str) -> str:
    """`text` with absolute file paths (POSIX, `C:\\...`, UNC) shown by their last part only."""
    def last_part(match: re.Match[str]) -> str:
        parts = [part for part in re.split(r"[\\/]", match.group(0)) if part]
        return f"<...>/{parts[-1]}" if parts else match.group(0)
    return _ABSOLUTE_PATH.sub(last_part, text)


def _each_object(obj: dict[str, Any]) -> dict[str, Any]:
    """The decoder's hook for every object: a Python call between objects lets other threads
    (the event loop) take the interpreter lock; the C decoder alone holds it for the whole text
    (about 2 s for a 50 MB prompt)."""
    return obj


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a big body is turned into objects (or copied): each
    full collection walks every live object, the half-built prompt included, with the
    interpreter lock held (a quarter second apiece for a 50 MB prompt, the event loop stalled).
    Parsed JSON holds no cycles, so nothing collectable waits; collection resumes after."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _big_loads(raw: bytes) -> Any:
    with gc_paused():
        return strict_loads(raw)


def strict_loads(raw: bytes | str) -> Any:
    """Parse strict JSON; raises ValueError (StrictJSONError / JSONDecodeError) on anything else."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float, object_hook=_each_object)
    except RecursionError:
        raise StrictJSONError(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    _check_tree(value)
    return value


def _finite(value: Any) -> Any:
    """A copy of `value` with non-finite floats as None (only used when strict dumping failed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(child) for child in value]
    return value


def strict_dumps(value: Any) -> str:
    """JSON text that every strict parser accepts: NaN/Infinity become null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def json_response(data: Any, *, status: int = 200, headers: Any = None) -> web.Response:
    """`web.json_response` with strict JSON (see `strict_dumps`)."""
    return web.json_response(data, status=status, headers=headers, dumps=strict_dumps)


async def json_response_off_loop(build: Callable[[], Any], *, status: int = 200) -> web.Response:
    """A strict JSON response whose data `build()` makes and which is serialised on a worker
    thread: listings (history, queue, jobs) that read and parse stored prompts never hold up the
    event loop, so other requests keep being answered meanwhile."""
    text = await asyncio.to_thread(lambda: strict_dumps(build()))
    return web.Response(text=text, status=status, content_type="application/json")


async def text_response_off_loop(build: Callable[[], str], *, status: int = 200) -> web.Response:
    """A JSON response whose text `build()` makes on a worker thread (texts spliced from stored,
    already strict JSON: the queue and history listings)."""
    text = await asyncio.to_thread(build)
    return web.Response(text=text, status=status, content_type="application/json")


def error_response(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    """`{"error": {"type", "message", ...}}` with the given status."""
    return json_response({"error": {"type": kind, "message": message, **extra}}, status=status)


class BadRequest(web.HTTPBadRequest):
    """400 with a JSON error body."""

    def __init__(self, message: str, kind: str = "bad_request") -> None:
        super().__init__(text=json.dumps({"error": {"type": kind, "message": message}}),
                         content_type="application/json")


class TooLarge(web.HTTPRequestEntityTooLarge):
    """413 with a JSON error body naming the limit."""

    def __init__(self, limit: int, size: int) -> None:
        message = (f"request body is over the limit of {limit} bytes (start Loom with a larger --max-upload-size, "
                   "in MB, to allow it)")
        super().__init__(max_size=limit, actual_size=size, content_type="application/json",
                         text=json.dumps({"error": {"type": "too_large", "message": message}}))


async def read_json(request: web.Request, *, expect: type | tuple[type, ...] = dict,
                    allow_empty: bool = False) -> Any:
    """The request body parsed as JSON, bounded by the server's JSON size limit (--max-upload-size).
    Raises TooLarge (413) over the limit, BadRequest (400) when it is not JSON or not of type `expect`."""
    limit = request.app[SETTINGS].max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit, request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):  # streamed: never more than the limit held
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit, size)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected JSON")
    try:
        value = await asyncio.to_thread(_big_loads, raw) if len(raw) > _THREAD_BYTES else strict_loads(raw)
    except StrictJSONError as exc:
        raise BadRequest(f"request body is not strict JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, expect):
        names = expect.__name__ if isinstance(expect, type) else "/".join(t.__name__ for t in expect)
        raise BadRequest(f"request body must be a JSON {'object' if expect is dict else names}, "
                         f"got {type(value).__name__}")
    return value


def int_query(request: web.Request, name: str, default: int | None, *, minimum: int | None = None) -> int | None:
    """An integer query parameter (400 when it is not one)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"query parameter {name!r} must be at least {minimum}, got {value}")
    if abs(value) > MAX_QUERY_INT:
        raise BadRequest(f"query parameter {name!r} is out of range (at most {MAX_QUERY_INT})")
    return value


def add_api_routes(app: web.Application, routes: Iterable[Any]) -> None:
    """Add routes both bare and under `/api/`. Items are `(method, path, handler)` tuples or
    aiohttp `RouteDef`s (a `web.RouteTableDef`); static routes are added once, as given."""
    for route in routes:
        if isinstance(route, tuple):
            method, path, handler = route
            kwargs: dict[str, Any] = {}
        elif isinstance(route, web.RouteDef):
            method, path, handler, kwargs = route.method, route.path, route.handler, dict(route.kwargs)
        else:
            app.router.add_routes([route])
            continue
        app.router.add_route(method, path, handler, **kwargs)
        app.router.add_route(method, "/api" + path, handler, **kwargs)
