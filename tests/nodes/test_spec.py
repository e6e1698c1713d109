"""nodes/spec.py: the typed declaration, its checks and its /object_info shape."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from folders import Folders
from nodes.spec import (ANY, Boolean, Combo, FileList, Float, Hidden, Input, InputSpec, Int, Node, NodeOutput,
                        NodeSpec, Output, OutputSpec, SpecError, String, normalize_result, validate_args)


class Sample(Node):
    """Adds things up."""

    NAME = "SampleNode"
    DISPLAY_NAME = "Sample"
    CATEGORY = "tests/spec"
    SEARCH_ALIASES = ("add", "sum")
    INPUTS = (
        Int("count", 2, min=1, max=10, step=1, tooltip="how many"),
        Float("scale", 0.5, min=0.0, max=1.0, step=0.01, round=0.001),
        String("text", "hi", multiline=True),
        Boolean("flag", True),
        Combo("mode", ("a", "b"), default="b"),
        Input("image", "IMAGE", lazy=True),
        Input("extra", ANY, optional=True, force_input=True),
        Hidden("prompt", "PROMPT"),
        Hidden("node_id", "UNIQUE_ID"),
    )
    OUTPUTS = (Output("INT", "total", tooltip="the sum"), Output("STRING", is_list=True))

    def execute(self, **inputs: Any) -> tuple[int, list[str]]:
        return inputs["count"], ["x"]

    @staticmethod
    def validate(count: int, input_types: dict[str, str]) -> bool | str:
        return True if count != 7 else "seven is not allowed"

    @classmethod
    def check_lazy(cls, **inputs: Any) -> list[str]:
        return ["image"] if inputs.get("image") is None else []


def test_object_info_shape() -> None:
    info = Sample.spec().object_info()
    assert info["name"] == "SampleNode" and info["display_name"] == "Sample"
    assert info["category"] == "tests/spec" and info["description"] == "Adds things up."
    assert info["output"] == ["INT", "STRING"] and info["output_is_list"] == [False, True]
    assert info["output_name"] == ["total", "STRING"] and info["output_tooltips"] == ["the sum", ""]
    assert info["output_node"] is False and info["search_aliases"] == ["add", "sum"]
    required = info["input"]["required"]
    assert required["count"] == ["INT", {"default": 2, "min": 1, "max": 10, "step": 1, "tooltip": "how many"}]
    assert required["scale"] == ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "round": 0.001}]
    assert required["text"] == ["STRING", {"default": "hi", "multiline": True}]
    assert required["flag"] == ["BOOLEAN", {"default": True}]
    assert required["mode"] == [["a", "b"], {"default": "b"}]
    assert required["image"] == ["IMAGE", {"lazy": True}]
    assert info["input"]["optional"] == {"extra": ["*", {"forceInput": True}]}
    assert info["input"]["hidden"] == {"prompt": "PROMPT", "node_id": "UNIQUE_ID"}
    assert info["input_order"] == {"required": ["count", "scale", "text", "flag", "mode", "image"],
                                   "optional": ["extra"], "hidden": ["prompt", "node_id"]}


def test_hooks_derived_from_the_class() -> None:
    spec = Sample.spec()
    assert spec.validate_inputs_args == frozenset({"count", "input_types"})
    assert spec.validate_inputs(count=7, input_types={}) == "seven is not allowed"
    assert spec.lazy_status(Sample(), image=None) == ["image"]
    assert spec.lazy_status(Sample(), image=1) == []
    assert spec.is_changed is None


def test_validate_args_reads_signatures() -> None:
    def named(a: int, *, b: int) -> bool:
        return True

    def kwargs(a: int, **rest: Any) -> bool:
        return True

    assert validate_args(named) == frozenset({"a", "b"})
    assert validate_args(kwargs) is None
    assert validate_args(None) is None


def test_lazy_status_calls_instance_methods_and_normalises() -> None:
    class WithMethod:
        def __init__(self) -> None:
            self.calls = 0

        def check_lazy_status(self, a: Any = None, b: Any = None) -> str:
            self.calls += 1
            return "a"

    spec = NodeSpec(class_type="L", inputs=(Input("a", "INT", lazy=True),), outputs=(), instantiate=WithMethod,
                    check_lazy_status=WithMethod.check_lazy_status)
    obj = WithMethod()
    assert spec.lazy_status(obj, a=None) == ["a"] and obj.calls == 1


def test_file_list_combo_is_listed_on_each_request(tmp_path: Path) -> None:
    folders = Folders.for_base(tmp_path)
    spec = NodeSpec(class_type="F", inputs=(Combo("ckpt", FileList("checkpoints")),
                                            Combo("pic", FileList("input", (".png",)))),
                    outputs=(), instantiate=object)
    assert spec.object_info(folders)["input"]["required"]["ckpt"] == [[]]
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "m.safetensors").write_bytes(b"")
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.png").write_bytes(b"")
    (tmp_path / "input" / "b.txt").write_bytes(b"")
    info = spec.object_info(folders)["input"]["required"]
    assert info["ckpt"] == [["m.safetensors"]] and info["pic"] == [["a.png"]]
    assert spec.object_info(None)["input"]["required"]["pic"] == [[]]


@pytest.mark.parametrize("inputs, message", [
    ((Int("n", 20, min=0, max=10),), "default 20 is outside"),
    ((Float("x", -1.0, min=0.0),), "default -1.0 is outside"),
    ((Int("n", 0, min=5, max=1),), "min 5 above max 1"),
    ((Int("n", "5"),), "non-numeric default"),  # type: ignore[arg-type]
    ((Float("x", math.nan),), "NaN default"),
    ((Int("n"), Int("n")), "duplicate input name 'n'"),
    ((Combo("c", ("a",), default="z"),), "not one of its choices"),
    ((InputSpec(name="c", type="COMBO"),), "has no choices"),
    ((Hidden("h", "SECRET"),), "unknown kind"),
    ((InputSpec(name="", type="INT"),), "empty or non-string name"),
    ((InputSpec(name="x", type=""),), "no socket type"),
])
def test_malformed_declarations_name_node_and_problem(inputs: tuple[InputSpec, ...], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        NodeSpec(class_type="Broken", inputs=inputs, outputs=(), instantiate=object)
    assert "Broken" in str(info.value)


def test_malformed_outputs_and_names() -> None:
    with pytest.raises(SpecError, match="output 0"):
        NodeSpec(class_type="B", inputs=(), outputs=(OutputSpec(type=""),), instantiate=object)
    with pytest.raises(SpecError, match="class name"):
        NodeSpec(class_type="", inputs=(), outputs=(), instantiate=object)


def test_socket_types_are_open() -> None:
    spec = NodeSpec(class_type="Custom", inputs=(Input("v", "VEC2"), Input("n", "NUMBER,INT")),
                    outputs=(Output("MY_TYPE"),), instantiate=object)
    assert spec.object_info()["input"]["required"]["v"] == ["VEC2"]


def test_normalize_result_forms() -> None:
    spec = Sample.spec()
    assert normalize_result(spec, (1, ["a"])).values == (1, ["a"])
    out = normalize_result(spec, {"ui": {"text": ["t"]}, "result": (1, ["a"])})
    assert out.values == (1, ["a"]) and out.ui == {"text": ["t"]}
    assert normalize_result(spec, NodeOutput(values=(2, []), ui=None)).values == (2, [])
    with pytest.raises(TypeError, match="returned 1 value"):
        normalize_result(spec, (1,))
    with pytest.raises(TypeError, match="returned int"):
        normalize_result(spec, 5)


class _TakesUndeclared(Node):
    INPUTS = [Int("a")]
    OUTPUTS = [Output("INT")]

    def execute(self, a: int, b: int = 0) -> tuple[int]:
        return (a + b,)


class _MissesDeclared(Node):
    INPUTS = [Int("a"), Int("b")]
    OUTPUTS = [Output("INT")]

    def execute(self, a: int) -> tuple[int]:
        return (a,)


class _TakesKwargs(Node):
    INPUTS = [Int("a"), Hidden("unique_id", "UNIQUE_ID")]
    OUTPUTS = [Output("INT")]

    def execute(self, a: int, **rest: Any) -> tuple[int]:
        return (a,)


def test_execute_signature_matches_declared_inputs_both_ways() -> None:
    with pytest.raises(SpecError, match=r"_TakesUndeclared: execute takes \['b'\], which are not declared"):
        _TakesUndeclared.spec()
    with pytest.raises(SpecError, match=r"_MissesDeclared: execute does not take the declared input\(s\) \['b'\]"):
        _MissesDeclared.spec()
    assert [i.name for i in _TakesKwargs.spec().inputs] == ["a", "unique_id"]
