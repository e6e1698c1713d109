"""ComfyUI-style classes run unchanged through the registry's adapter and the executor:
VALIDATE_INPUTS (with input_types), IS_CHANGED, instance check_lazy_status, INPUT_IS_LIST,
OUTPUT_IS_LIST, `{"ui", "result"}` results."""
from __future__ import annotations

from typing import Any

import pytest

from executor.run import Executor
from executor.validate import validate_prompt
from nodes.registry import NodeRegistry

LOG: list[str] = []


class Split:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"default": "a,b"})}}

    RETURN_TYPES = ("STRING", "INT")
    OUTPUT_IS_LIST = (True, False)
    FUNCTION = "split"
    CATEGORY = "test"

    def split(self, text: str) -> tuple[list[str], int]:
        LOG.append("split")
        parts = text.split(",")
        return parts, len(parts)


class Join:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"parts": ("STRING", {"forceInput": True}), "sep": ("STRING", {"default": "+"})}}

    RETURN_TYPES = ("STRING",)
    INPUT_IS_LIST = True
    FUNCTION = "join"
    CATEGORY = "test"

    def join(self, parts: list[str], sep: list[str]) -> tuple[str]:
        return (sep[0].join(parts),)


class Upper:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, text: str) -> tuple[str]:
        return (text.upper(),)


class Pick:
    """Lazy inputs with an instance-method check_lazy_status, as ComfyUI's docs show."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"first": ("BOOLEAN", {"default": True}),
                             "a": ("STRING", {"lazy": True, "forceInput": True}),
                             "b": ("STRING", {"lazy": True, "forceInput": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "pick"
    CATEGORY = "test"

    def check_lazy_status(self, first: bool, a: Any = None, b: Any = None) -> list[str]:
        return ["a"] if first else ["b"]

    def pick(self, first: bool, a: Any = None, b: Any = None) -> tuple[Any]:
        return (a if first else b,)


class Show:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def show(self, value: Any, unique_id: str) -> dict[str, Any]:
        LOG.append(f"show{unique_id}")
        return {"ui": {"text": [str(value)]}, "result": ()}


class Checked:
    VERSION = "1"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 10}), "other": ("*",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def VALIDATE_INPUTS(cls, value: int, input_types: dict[str, str]) -> bool | str:
        if input_types.get("other") != "STRING":
            return f"other must be a STRING, got {input_types.get('other')}"
        return True if value < 100 else "too big"

    @classmethod
    def IS_CHANGED(cls, value: int) -> str:
        return cls.VERSION

    def run(self, value: int, other: Any) -> tuple[int]:
        LOG.append("checked")
        return (value,)


@pytest.fixture()
def registry() -> NodeRegistry:
    LOG.clear()
    reg = NodeRegistry()
    for cls in (Split, Join, Upper, Pick, Show, Checked):
        reg.register(cls, pack="tests")
    return reg


def test_list_semantics_through_classic_classes(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Split", "inputs": {"text": "x,y,z"}},
              "2": {"class_type": "Upper", "inputs": {"text": ["1", 0]}},
              "3": {"class_type": "Join", "inputs": {"parts": ["2", 0], "sep": "-"}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "Show", "inputs": {"value": ["1", 1]}}}
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry).execute(checked.prompt, "c", outputs_to_execute=checked.outputs)
    assert result.outputs == {"4": {"text": ["X-Y-Z"]}, "5": {"text": ["3"]}}


def test_lazy_instance_hook(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Split", "inputs": {"text": "p"}},
              "2": {"class_type": "Upper", "inputs": {"text": ["1", 0]}},
              "3": {"class_type": "Pick", "inputs": {"first": False, "a": ["2", 0], "b": ["1", 0]}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    result = Executor(registry).execute(prompt, "l")
    assert result.status == "success" and result.outputs == {"4": {"text": ["p"]}}


def test_validate_inputs_with_input_types_and_is_changed(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Split", "inputs": {"text": "p"}},
              "2": {"class_type": "Checked", "inputs": {"value": 500, "other": ["1", 1]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    checked = validate_prompt(prompt, registry)
    details = sorted(e["details"] for e in checked.node_errors["2"]["errors"])
    # `value` is named by VALIDATE_INPUTS, so its max is left to the hook, as in ComfyUI
    assert details == ["input_types - other must be a STRING, got INT", "value - other must be a STRING, got INT"]
    prompt["2"]["inputs"]["other"] = ["1", 0]
    checked = validate_prompt(prompt, registry)
    assert [e["details"] for e in checked.node_errors["2"]["errors"]] == ["value - too big", "input_types - too big"]
    prompt["2"]["inputs"]["value"] = 50
    checked = validate_prompt(prompt, registry)
    assert checked.ok
    executor = Executor(registry)
    executor.execute(checked.prompt, "a")
    executor.execute(checked.prompt, "b")
    assert LOG.count("checked") == 1
    Checked.VERSION = "2"
    try:
        executor.execute(checked.prompt, "c")
    finally:
        Checked.VERSION = "1"
    assert LOG.count("checked") == 2
