"""nodes/classic.py: ComfyUI-style classes adapted into NodeSpecs, unchanged, and run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from executor.run import Executor
from folders import Folders
from nodes.classic import adapt_classic, is_classic
from nodes.registry import NodeRegistry
from nodes.spec import COMBO, SpecError


class Everything:
    """A ComfyUI-style class using every declaration feature."""

    CHOICES = ["one", "two"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "the prompt"}),
                "pick": (cls.CHOICES, {"default": "one"}),
                "sampler": ("COMBO", {"options": ["euler", "heun"], "default": "heun"}),
                "plain_list": (["x", "y"],),
                "image": ("IMAGE", {"lazy": True}),
            },
            "optional": {
                "value": ("FLOAT", {"forceInput": True, "defaultInput": True}),
                "upload": ("STRING", {"image_upload": True, "display": "number", "placeholder": "p"}),
            },
            "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID", "odd": "SOMETHING_NEW"},
        }

    RETURN_TYPES = ("INT", "STRING", ["a", "b"])
    RETURN_NAMES = ("number", "words")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = ("a number", "some words", "a choice")
    FUNCTION = "run"
    CATEGORY = "tests/classic"
    DESCRIPTION = "Does everything."
    OUTPUT_NODE = True
    INPUT_IS_LIST = False
    DEPRECATED = True
    EXPERIMENTAL = True
    NOT_IDEMPOTENT = True
    SEARCH_ALIASES = ["all", "every"]

    def run(self, **kwargs: Any) -> tuple[Any, ...]:
        return kwargs["seed"], ["w"], "a"

    @classmethod
    def IS_CHANGED(cls, seed: int, **kwargs: Any) -> str:
        return f"seed={seed}"

    @classmethod
    def VALIDATE_INPUTS(cls, pick: str, input_types: dict[str, str]) -> bool | str:
        return True if pick in cls.CHOICES else f"bad pick {pick}"

    def check_lazy_status(self, image: Any = None, **kwargs: Any) -> list[str]:
        return ["image"] if image is None else []


def test_every_attribute_is_mapped() -> None:
    before = dict(vars(Everything))
    spec = adapt_classic(Everything, "Everything", display_name="Every Thing")
    assert dict(vars(Everything)) == before  # the class is not changed
    assert spec.source is Everything and spec.instantiate is Everything and spec.function_name == "run"
    assert spec.display_name == "Every Thing" and spec.category == "tests/classic"
    assert spec.description == "Does everything." and spec.output_node
    assert spec.deprecated and spec.experimental and spec.not_idempotent and not spec.input_is_list
    assert [i.name for i in spec.inputs] == ["seed", "cfg", "text", "pick", "sampler", "plain_list", "image",
                                             "value", "upload", "prompt", "extra", "uid"]  # SOMETHING_NEW dropped
    seed, cfg, text = spec.input("seed"), spec.input("cfg"), spec.input("text")
    assert seed.type == "INT" and seed.max == 0xFFFFFFFFFFFFFFFF and seed.extra == {"control_after_generate": True}
    assert cfg.step == 0.1 and cfg.round == 0.01
    assert text.multiline and text.tooltip == "the prompt" and text.extra == {"dynamicPrompts": True}
    assert spec.input("pick").type == COMBO and spec.input("pick").resolve_choices() == ["one", "two"]
    assert spec.input("sampler").resolve_choices() == ["euler", "heun"] and spec.input("sampler").default == "heun"
    assert spec.input("plain_list").resolve_choices() == ["x", "y"]
    assert spec.input("image").lazy
    value = spec.input("value")
    assert value.optional and value.force_input and value.extra == {"defaultInput": True}
    assert spec.input("upload").extra == {"image_upload": True, "display": "number", "placeholder": "p"}
    assert spec.input("prompt").hidden == "PROMPT" and spec.input("uid").hidden == "UNIQUE_ID"
    assert [(o.type, o.name, o.is_list, o.tooltip) for o in spec.outputs] == [
        ("INT", "number", False, "a number"), ("STRING", "words", True, "some words"),
        (COMBO, None, False, "a choice")]
    assert spec.is_changed(seed=3, cfg=1.0) == "seed=3"
    assert spec.validate_inputs_args == frozenset({"pick", "input_types"})
    assert spec.validate_inputs(pick="zzz", input_types={}) == "bad pick zzz"
    assert spec.lazy_status(Everything(), image=None) == ["image"]


def test_object_info_matches_comfyui_shape() -> None:
    info = adapt_classic(Everything, "Everything").object_info()
    assert info["input"]["required"]["pick"] == [["one", "two"], {"default": "one"}]
    assert info["input"]["required"]["sampler"] == [["euler", "heun"], {"default": "heun"}]
    assert info["input"]["required"]["plain_list"] == [["x", "y"]]
    assert info["input"]["optional"]["value"] == ["FLOAT", {"forceInput": True, "defaultInput": True}]
    assert info["input"]["hidden"] == {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID"}
    assert info["output"] == ["INT", "STRING", "COMBO"] and info["output_is_list"] == [False, True, False]
    assert info["output_name"] == ["number", "words", "COMBO"]
    assert info["output_tooltips"] == ["a number", "some words", "a choice"]
    assert info["display_name"] == "Everything" and info["python_module"] == "nodes"
    assert info["deprecated"] is True and info["experimental"] is True
    assert info["search_aliases"] == ["all", "every"]


def test_combo_choices_are_reread_from_input_types(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = adapt_classic(Everything, "Everything")
    monkeypatch.setattr(Everything, "CHOICES", ["one", "two", "three"])
    assert spec.input("pick").resolve_choices() == ["one", "two", "three"]
    assert spec.object_info()["input"]["required"]["pick"][0] == ["one", "two", "three"]


class Minimal:
    @classmethod
    def INPUT_TYPES(s):  # noqa: N805 - ComfyUI's customary name
        return {"required": {"a": ("INT", {"default": 1, "min": 0, "max": 10}), "b": ("STRING", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, a: int, b: str) -> tuple[int]:
        return (a + len(b),)


def test_defaults_of_a_minimal_class() -> None:
    spec = adapt_classic(Minimal, "Minimal")
    info = spec.object_info()
    assert info["category"] == "sd" and info["description"] == "" and info["output_node"] is False
    assert info["output_name"] == ["INT"] and info["output_is_list"] == [False]
    assert "output_tooltips" not in info and "deprecated" not in info
    assert spec.is_changed is None and spec.validate_inputs is None and spec.check_lazy_status is None
    assert is_classic(Minimal) and not is_classic(object)


def _broken(**attrs: Any) -> type:
    base = {"INPUT_TYPES": classmethod(lambda cls: {"required": {}}), "RETURN_TYPES": (), "FUNCTION": "f",
            "f": lambda self: ()}
    base.update(attrs)
    return type("Broken", (), base)


def _raise(cls: type) -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("attrs, message", [
    ({"FUNCTION": None}, "FUNCTION"),
    ({"FUNCTION": "missing"}, "not a method"),
    ({"INPUT_TYPES": classmethod(_raise)}, "INPUT_TYPES\\(\\) raised RuntimeError: boom"),
    ({"INPUT_TYPES": classmethod(lambda cls: ["x"])}, "expected a dict"),
    ({"INPUT_TYPES": classmethod(lambda cls: {"required": ["a"]})}, "is not a dict of inputs"),
    ({"INPUT_TYPES": classmethod(lambda cls: {"required": {"a": "INT"}})}, "must be \\(type, options\\)"),
    ({"INPUT_TYPES": classmethod(lambda cls: {"required": {"a": (5,)}})}, "invalid socket type"),
    ({"INPUT_TYPES": classmethod(lambda cls: {"required": {"a": ("INT", 5)}})}, "must be a dict"),
    ({"INPUT_TYPES": classmethod(lambda cls: {"required": {"a": ("INT", {"default": 11, "max": 10})}})},
     "default 11 is outside"),
    ({"RETURN_TYPES": "IMAGE"}, "RETURN_TYPES must be a tuple"),
    ({"RETURN_TYPES": (None,)}, "RETURN_TYPES\\[0\\]"),
])
def test_malformed_classes_raise_spec_errors_naming_the_node(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        adapt_classic(_broken(**attrs), "MyBrokenNode")
    assert "MyBrokenNode" in str(info.value)


def test_classic_nodes_run_through_the_executor(tmp_path: Path) -> None:
    registry = NodeRegistry()
    registry.register(Minimal, class_type="Minimal", pack="pack")

    class Show:
        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"v": ("INT",)}, "hidden": {"uid": "UNIQUE_ID"}}

        RETURN_TYPES = ()
        FUNCTION = "show"
        OUTPUT_NODE = True

        def show(self, v: int, uid: str) -> dict[str, Any]:
            return {"ui": {"text": [f"{uid}:{v}"]}}

    registry.register(Show, class_type="Show", pack="pack")
    executor = Executor(registry, folders=Folders.for_base(tmp_path))
    prompt = {"1": {"class_type": "Minimal", "inputs": {"a": 4, "b": "abc"}},
              "2": {"class_type": "Show", "inputs": {"v": ["1", 0]}}}
    result = executor.execute(prompt, "p")
    assert result.status == "success", result.error
    assert result.outputs["2"] == {"text": ["2:7"]}


def test_a_name_in_required_and_optional_is_one_required_input() -> None:
    """ComfyUI accepts it (its own list test node declares `value1` in both) and treats it as required."""
    cls = type("Both", (), {"INPUT_TYPES": classmethod(lambda cls: {"required": {"a": ("INT",)},
                                                                    "optional": {"a": ("INT",), "b": ("INT",)}}),
                            "RETURN_TYPES": ("INT",), "FUNCTION": "run", "run": lambda self, a, b=0: (a + b,)})
    spec = adapt_classic(cls, "Both")
    assert [(i.name, i.optional) for i in spec.inputs] == [("a", False), ("b", True)]
