"""nodes/registry.py: registration, checks, collisions, /object_info, the built-in list."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from folders import Folders
from nodes.builtin import BUILTIN_MODULES
from nodes.registry import Collision, NodeRegistry, build_builtin_registry
from nodes.spec import Input, Int, Node, NodeSpec, Output, SpecError

BUILTINS = {"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean",
            "StringConcatenate", "PreviewAny", "EmptyImage", "ImageInvert", "PreviewImage", "SaveImage", "LoadImage"}


class Double(Node):
    """Doubles a number."""

    INPUTS = (Int("x", 1, min=0, max=100),)
    OUTPUTS = (Output("INT"),)

    def execute(self, x: int) -> tuple[int]:
        return (2 * x,)


class ClassicDouble:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"x": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, x: int) -> tuple[int]:
        return (2 * x,)


def test_register_each_kind_of_declaration() -> None:
    registry = NodeRegistry()
    assert registry.register(Double).class_type == "Double"
    assert registry.register(ClassicDouble, pack="mypack", class_type="Classic Double").class_type == "Classic Double"
    ready = NodeSpec(class_type="Ready", inputs=(Input("v", "VEC2"),), outputs=(), instantiate=object)
    assert registry.register(ready, pack="other") is ready
    assert list(registry) == ["Double", "Classic Double", "Ready"] and len(registry) == 3
    assert "Double" in registry and "Nope" not in registry
    assert registry.get("Nope") is None and registry["Ready"] is ready
    assert registry.pack_of("Classic Double") == "mypack" and registry.pack_of("Double") == "builtin"
    assert registry.pack_of("Nope") is None
    info = registry.object_info()
    assert info["Classic Double"]["python_module"] == "custom_nodes.mypack"
    assert info["Double"]["python_module"] == __name__


def test_display_name_and_class_type_overrides() -> None:
    registry = NodeRegistry()
    spec = registry.register(ClassicDouble, display_name="Double It")
    assert spec.class_type == "ClassicDouble" and spec.display_name == "Double It"
    assert registry.object_info()["ClassicDouble"]["display_name"] == "Double It"
    renamed = registry.register(Double, class_type="Twice")
    assert renamed.class_type == "Twice" and "Twice" in registry


def test_collision_keeps_the_first_and_records_it() -> None:
    registry = NodeRegistry()
    first = registry.register(Double)
    assert registry.register(ClassicDouble, pack="intruder", class_type="Double") is None
    assert registry.get("Double") is first and registry.pack_of("Double") == "builtin"
    assert registry.collisions == [Collision("Double", "builtin", "intruder")]


def test_registries_are_independent() -> None:
    a, b = NodeRegistry(), NodeRegistry()
    a.register(Double)
    assert "Double" in a and "Double" not in b


class BadDefault(Node):
    INPUTS = (Int("x", 500, min=0, max=100),)


class DuplicateInput(Node):
    INPUTS = (Int("x"), Int("x"))


class BadInputSpec(Node):
    INPUTS = ("not an input",)  # type: ignore[assignment]


@pytest.mark.parametrize("node, message", [
    (BadDefault, "node BadDefault: input 'x' default 500 is outside"),
    (DuplicateInput, "node DuplicateInput: duplicate input name 'x'"),
    (BadInputSpec, "node BadInputSpec: inputs must be InputSpec"),
    (object, "cannot register"),
    (42, "cannot register"),
])
def test_malformed_declarations_fail_at_registration(node: Any, message: str) -> None:
    registry = NodeRegistry()
    with pytest.raises(SpecError, match=message):
        registry.register(node)
    assert len(registry) == 0


def test_object_info_skips_a_node_that_fails_at_request_time(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky:
        calls = 0

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            cls.calls += 1
            if cls.calls > 1:
                return {"required": {"c": ("INT",)}}  # "c" is no longer a combo
            return {"required": {"c": (["a"],)}}

        RETURN_TYPES = ()
        FUNCTION = "f"

        def f(self, c: str) -> tuple[()]:
            return ()

    registry = NodeRegistry()
    registry.register(Flaky)
    registry.register(Double)
    info = registry.object_info()  # the live choices fall back to those read at registration
    assert info["Flaky"]["input"]["required"]["c"] == [["a"]] and "Double" in info


def test_builtin_registry_has_the_built_in_nodes(tmp_path: Path) -> None:
    registry = build_builtin_registry()
    assert BUILTINS <= set(registry)
    assert all(registry.pack_of(name) == "builtin" for name in registry)
    assert "nodes.primitives" in BUILTIN_MODULES and "nodes.image_save_load" in BUILTIN_MODULES
    info = registry.object_info(Folders.for_base(tmp_path))
    json.dumps(info)  # the whole answer is JSON
    for name in BUILTINS:
        entry = info[name]
        for key in ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
                    "description", "python_module", "category", "output_node"):
            assert key in entry, (name, key)


def test_builtin_registry_from_an_explicit_module_list() -> None:
    registry = build_builtin_registry(["nodes.primitives"])
    assert "PrimitiveInt" in registry and "SaveImage" not in registry
    with pytest.raises(ImportError):
        build_builtin_registry(["nodes.no_such_module"])
    with pytest.raises(SpecError, match="has no NODES"):
        build_builtin_registry(["nodes.spec"])
