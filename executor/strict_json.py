"""Strict JSON, everywhere Loom reads or writes it: what goes in is refused when it is not standard JSON, and what
comes out always is.

Python's `json` accepts `NaN`, `Infinity` and numbers like `1e400` (read as infinity), and writes them back as
tokens no other JSON parser accepts; it also hits the interpreter's recursion limit on deeply nested documents
and returns strings holding unpaired surrogates that cannot be stored or sent. `loads` refuses all of these with
`StrictJSONError` (a ValueError saying what and where); `dumps` writes non-finite floats as `null`, so a node
output holding one cannot make `/history` or the websocket emit invalid JSON.
"""
from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 200


class StrictJSONError(ValueError):
    """The text is not strict JSON (or nests deeper than MAX_DEPTH)."""


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not valid JSON (use a finite number or null)")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"the number {text[:40]} is outside the range of a 64-bit float")
    return value


def _check(value: Any, depth: int = 0) -> None:
    """Depth and strings: iterative over containers so deep documents cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            raise StrictJSONError(f"the document nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, level + 1))
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJSONError("a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None


def loads(text: str | bytes) -> Any:
    """Parse strict JSON; raises StrictJSONError (NaN, Infinity, overflowing numbers, unpaired surrogates, nesting
    deeper than MAX_DEPTH) or ValueError (not JSON at all)."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_number)
    except RecursionError:
        raise StrictJSONError(f"the document nests deeper than {MAX_DEPTH} levels") from None
    _check(value)
    return value


def sanitize(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (containers copied only where needed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Standard JSON: non-finite floats become null (`allow_nan` is never used)."""
    kwargs.pop("allow_nan", None)
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(sanitize(value), allow_nan=False, **kwargs)
