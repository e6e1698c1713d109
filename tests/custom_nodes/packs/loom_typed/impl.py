"""The typed pack's nodes."""
from __future__ import annotations

from typing import Any

from nodes.context import current
from nodes.spec import Boolean, Input, Int, Node, NodeOutput, Output

from .helpers import double


class TypedDouble(Node):
    """Doubles an integer, reporting one progress step."""

    CATEGORY = "tests/typed"
    INPUTS = (Int("value", 1, min=-1000, max=1000),)
    OUTPUTS = (Output("INT", "doubled"),)

    def execute(self, value: int) -> tuple[int]:
        current().progress(1, 1)
        return (double(value),)


class TypedPick(Node):
    """Lazy choice between two integers."""

    CATEGORY = "tests/typed"
    OUTPUT_NODE = True
    INPUTS = (Boolean("first", True), Input("a", "INT", lazy=True), Input("b", "INT", lazy=True))
    OUTPUTS = (Output("INT"),)

    @staticmethod
    def check_lazy(first: bool, a: Any = None, b: Any = None) -> list[str]:
        name = "a" if first else "b"
        return [name] if (a if first else b) is None else []

    def execute(self, first: bool, a: Any = None, b: Any = None) -> NodeOutput:
        value = a if first else b
        return NodeOutput(values=(value,), ui={"value": [value]})


NODES = [TypedDouble, TypedPick]
