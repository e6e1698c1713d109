"""Primitive value nodes and small utility nodes: PrimitiveInt/Float/String/StringMultiline/
Boolean, StringConcatenate and PreviewAny.

Names, inputs, ranges, categories and display names follow ComfyUI's
`comfy_extras/nodes_primitive.py`, `nodes_string.py` and `nodes_preview_any.py`.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from nodes.spec import ANY, Boolean, Float, Input, Int, Node, NodeOutput, Output, String

# ComfyUI bounds its primitive numbers by the platform's largest int.
_BIG = sys.maxsize


class PrimitiveInt(Node):
    """An integer value."""

    DISPLAY_NAME = "Int"
    CATEGORY = "utils/primitive"
    INPUTS = (Int("value", None, min=-_BIG, max=_BIG, control_after_generate=True),)
    OUTPUTS = (Output("INT"),)

    def execute(self, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    """A floating-point value."""

    DISPLAY_NAME = "Float"
    CATEGORY = "utils/primitive"
    INPUTS = (Float("value", None, min=-_BIG, max=_BIG, step=0.1),)
    OUTPUTS = (Output("FLOAT"),)

    def execute(self, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString(Node):
    """A one-line string."""

    DISPLAY_NAME = "String"
    CATEGORY = "utils/primitive"
    INPUTS = (String("value", None),)
    OUTPUTS = (Output("STRING"),)

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    """A multi-line string."""

    DISPLAY_NAME = "String (Multiline)"
    CATEGORY = "utils/primitive"
    INPUTS = (String("value", None, multiline=True),)
    OUTPUTS = (Output("STRING"),)

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveBoolean(Node):
    """A true/false value."""

    DISPLAY_NAME = "Boolean"
    CATEGORY = "utils/primitive"
    INPUTS = (Boolean("value", None),)
    OUTPUTS = (Output("BOOLEAN"),)

    def execute(self, value: bool) -> tuple[bool]:
        return (value,)


class StringConcatenate(Node):
    """Join two strings with a delimiter between them."""

    DISPLAY_NAME = "Concatenate"
    CATEGORY = "utils/string"
    SEARCH_ALIASES = ("text concat", "join text", "merge text", "combine strings", "concat", "concatenate",
                      "append text", "combine text", "string")
    INPUTS = (String("string_a", None, multiline=True), String("string_b", None, multiline=True),
              String("delimiter", ""))
    OUTPUTS = (Output("STRING"),)

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


def preview_text(value: Any) -> str:
    """How PreviewAny shows a value: strings as they are, numbers and booleans with `str`,
    JSON-able values as indented JSON, anything else (tensors...) with `str`."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        pass
    try:
        import torch  # only to shorten tensor printouts, as ComfyUI does

        with _print_options(torch):
            return str(value)
    except ImportError:
        return str(value)


class _print_options:
    """Temporarily print tensors with 6 edge items (ComfyUI's PreviewAny setting)."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch

    def __enter__(self) -> None:
        self._torch.set_printoptions(edgeitems=6)

    def __exit__(self, *exc: object) -> None:
        self._torch.set_printoptions(profile="default")


class PreviewAny(Node):
    """Show any value as text in the editor."""

    DISPLAY_NAME = "Preview as Text"
    CATEGORY = "utilities"
    OUTPUT_NODE = True
    SEARCH_ALIASES = ("show output", "inspect", "debug", "print value", "show text")
    INPUTS = (Input("source", ANY),)
    OUTPUTS = (Output("STRING"),)

    def execute(self, source: Any = None) -> NodeOutput:
        text = preview_text(source)
        return NodeOutput(values=(text,), ui={"text": [text]})


NODES: list[type] = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean,
                     StringConcatenate, PreviewAny]
