"""The example pack's nodes: one per feature a node author usually needs.

- `ExampleBrightness`: a plain image node that reports progress and honours interrupts;
- `ExampleLazySwitch`: lazy inputs, only the chosen branch is computed;
- `ExampleJoinText`: a list input (receives every item at once);
- `ExampleReadText`: a fingerprint (ComfyUI's IS_CHANGED) and input validation;
- `ExampleShowText`: an output node showing text in the editor (see web/example.js).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nodes.context import current, current_or_none
from nodes.spec import Boolean, Float, Input, Node, NodeOutput, Output, String


class ExampleBrightness(Node):
    """Multiplies the brightness of each image by `factor`, clamped to 0..1."""

    DISPLAY_NAME = "Example: Brightness"
    CATEGORY = "example"
    INPUTS = (Input("image", "IMAGE"), Float("factor", 1.0, min=0.0, max=10.0, step=0.05))
    OUTPUTS = (Output("IMAGE", "image"),)

    def execute(self, image: torch.Tensor, factor: float) -> tuple[torch.Tensor]:
        ctx = current()
        out = []
        for index, item in enumerate(image):
            out.append((item * factor).clamp(0.0, 1.0))
            ctx.progress(index + 1, len(image))  # also raises when the user interrupted
        return (torch.stack(out),)


class ExampleLazySwitch(Node):
    """Passes on `on_true` or `on_false`; only the chosen input's branch runs."""

    DISPLAY_NAME = "Example: Lazy Switch"
    CATEGORY = "example"
    INPUTS = (Boolean("choose", True), Input("on_true", "*", lazy=True), Input("on_false", "*", lazy=True))
    OUTPUTS = (Output("*", "value"),)

    @staticmethod
    def check_lazy(choose: bool, on_true: Any = None, on_false: Any = None) -> list[str]:
        wanted = "on_true" if choose else "on_false"
        return [wanted] if (on_true if choose else on_false) is None else []

    def execute(self, choose: bool, on_true: Any = None, on_false: Any = None) -> tuple[Any]:
        return (on_true if choose else on_false,)


class ExampleJoinText(Node):
    """Joins every text of a list (e.g. from a node with a list output) with `separator`."""

    DISPLAY_NAME = "Example: Join Text List"
    CATEGORY = "example"
    INPUT_IS_LIST = True
    INPUTS = (Input("texts", "STRING"), String("separator", ", "))
    OUTPUTS = (Output("STRING", "text"),)

    def execute(self, texts: list[str], separator: list[str]) -> tuple[str]:
        return (separator[0].join(texts),)


class ExampleReadText(Node):
    """Reads a text file from the input folder; reruns only when the file changes."""

    DISPLAY_NAME = "Example: Read Text File"
    CATEGORY = "example"
    INPUTS = (String("name", "notes.txt"),)
    OUTPUTS = (Output("STRING", "text"),)

    @staticmethod
    def _path(name: str) -> Path:
        return Path(current().folders.full_path("input", name))

    @staticmethod
    def fingerprint(name: str) -> Any:
        """The file's modification time: a changed file reruns the node."""
        ctx = current_or_none()
        if ctx is None or ctx.folders is None:
            return float("nan")  # cannot look: NaN never equals itself, so the node reruns
        try:
            return Path(ctx.folders.full_path("input", name)).stat().st_mtime_ns
        except (OSError, ValueError):
            return float("nan")

    @staticmethod
    def validate(name: str) -> bool | str:
        if not name.endswith(".txt"):
            return f"'{name}' is not a .txt file"
        return True

    def execute(self, name: str) -> tuple[str]:
        return (self._path(name).read_text(encoding="utf-8"),)


class ExampleShowText(Node):
    """Shows its text under the node in the editor and passes it on."""

    DISPLAY_NAME = "Example: Show Text"
    CATEGORY = "example"
    OUTPUT_NODE = True
    INPUTS = (Input("text", "STRING", force_input=True),)
    OUTPUTS = (Output("STRING", "text"),)

    def execute(self, text: str) -> NodeOutput:
        return NodeOutput(values=(text,), ui={"text": [text]})


NODES: list[type] = [ExampleBrightness, ExampleLazySwitch, ExampleJoinText, ExampleReadText, ExampleShowText]
