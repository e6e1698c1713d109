"""Errors in workflow documents: `WorkflowError` and the JSON paths it points at.

Shared by the API-format parser (`executor/workflow.py`) and the UI-format converter
(`executor/workflow_ui.py`), so neither imports the other for it.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from pydantic import ValidationError


class WorkflowError(ValueError):
    """A workflow document is malformed; `path` is the JSON path of the problem."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def json_path(loc: Iterable[Any], root: str = "$") -> str:
    """`("nodes", 3, "id")` → `$.nodes[3].id` (keys that are not identifiers are quoted)."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part))}]"
    return path


def from_validation_error(error: ValidationError, root: str = "$", prefix: tuple[Any, ...] = ()) -> WorkflowError:
    """The first pydantic error as a `WorkflowError` at its JSON path."""
    first = error.errors()[0]
    loc = tuple(p for p in first["loc"] if p not in ("function-after", "list[...]"))
    return WorkflowError(first["msg"], json_path(prefix + loc, root))
