"""nodes/primitives.py through the real executor: primitive values, StringConcatenate,
PreviewAny, and their /object_info entries (ComfyUI's)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from executor.run import Executor
from folders import Folders
from nodes.primitives import preview_text
from nodes.registry import NodeRegistry, build_builtin_registry


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return build_builtin_registry()


def run(registry: NodeRegistry, tmp_path: Path, prompt: dict[str, Any]) -> dict[str, Any]:
    result = Executor(registry, folders=Folders.for_base(tmp_path)).execute(prompt, "p")
    assert result.status == "success", result.error
    return result.outputs


def preview_of(registry: NodeRegistry, tmp_path: Path, class_type: str, value: Any) -> str:
    prompt = {"1": {"class_type": class_type, "inputs": {"value": value}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    (text,) = run(registry, tmp_path, prompt)["2"]["text"]
    return text


@pytest.mark.parametrize("class_type, value, shown", [
    ("PrimitiveInt", 42, "42"),
    ("PrimitiveInt", -sys.maxsize, str(-sys.maxsize)),
    ("PrimitiveFloat", 2.5, "2.5"),
    ("PrimitiveString", "hello", "hello"),
    ("PrimitiveStringMultiline", "two\nlines", "two\nlines"),
    ("PrimitiveBoolean", True, "True"),
    ("PrimitiveBoolean", False, "False"),
])
def test_primitive_values_reach_preview_any(registry: NodeRegistry, tmp_path: Path, class_type: str, value: Any,
                                            shown: str) -> None:
    assert preview_of(registry, tmp_path, class_type, value) == shown


def test_string_concatenate_chain(registry: NodeRegistry, tmp_path: Path) -> None:
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveString", "inputs": {"value": "a"}}}
    for i in range(1, 200):
        prompt[str(i)] = {"class_type": "StringConcatenate",
                          "inputs": {"string_a": [str(i - 1), 0], "string_b": "b", "delimiter": "" if i % 2 else "-"}}
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["199", 0]}}
    (text,) = run(registry, tmp_path, prompt)["out"]["text"]
    assert text == "a" + "b-b" * 99 + "b"


def test_preview_any_returns_its_text_as_output(registry: NodeRegistry) -> None:
    spec = registry["PreviewAny"]
    result = spec.instantiate().execute(source={"a": [1, 2]})
    assert result.values == (json.dumps({"a": [1, 2]}, indent=4),)
    assert result.ui == {"text": [json.dumps({"a": [1, 2]}, indent=4)]}


def test_preview_text_of_various_values() -> None:
    assert preview_text(None) == "None"
    assert preview_text(["x", 1]) == json.dumps(["x", 1], indent=4)
    assert preview_text(3) == "3"
    tensor_text = preview_text(torch.zeros(2, 3))
    assert tensor_text.startswith("tensor(") and "0." in tensor_text
    long_text = preview_text(torch.arange(5000))  # long tensors are summarised with 6 edge items
    assert "..." in long_text and "4994" in long_text and "4993" not in long_text and " 5," in long_text
    assert " 6," not in long_text
    assert "4996" not in str(torch.arange(5000))  # the default 3 edge items are restored afterwards

    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    assert preview_text(Opaque()) == "<opaque>"


def test_object_info_matches_comfyui(registry: NodeRegistry) -> None:
    info = registry.object_info()
    big = sys.maxsize
    assert info["PrimitiveInt"]["input"]["required"]["value"] == [
        "INT", {"min": -big, "max": big, "control_after_generate": True}]
    assert info["PrimitiveFloat"]["input"]["required"]["value"] == ["FLOAT", {"min": -big, "max": big, "step": 0.1}]
    assert info["PrimitiveString"]["input"]["required"]["value"] == ["STRING"]
    assert info["PrimitiveStringMultiline"]["input"]["required"]["value"] == ["STRING", {"multiline": True}]
    assert info["PrimitiveBoolean"]["input"]["required"]["value"] == ["BOOLEAN"]
    concat = info["StringConcatenate"]
    assert concat["input"]["required"] == {"string_a": ["STRING", {"multiline": True}],
                                           "string_b": ["STRING", {"multiline": True}],
                                           "delimiter": ["STRING", {"default": ""}]}
    assert concat["input_order"] == {"required": ["string_a", "string_b", "delimiter"]}
    assert concat["display_name"] == "Concatenate" and concat["category"] == "utils/string"
    preview = info["PreviewAny"]
    assert preview["input"]["required"] == {"source": ["*"]} and preview["output"] == ["STRING"]
    assert preview["output_node"] is True and preview["display_name"] == "Preview as Text"
    assert preview["category"] == "utilities"
    names = {k: info[k]["display_name"] for k in ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString",
                                                  "PrimitiveStringMultiline", "PrimitiveBoolean")}
    assert names == {"PrimitiveInt": "Int", "PrimitiveFloat": "Float", "PrimitiveString": "String",
                     "PrimitiveStringMultiline": "String (Multiline)", "PrimitiveBoolean": "Boolean"}
    assert {info[k]["category"] for k in names} == {"utils/primitive"}
