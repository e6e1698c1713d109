"""The schema API (`comfy_api.latest.io`) adapted into NodeSpec: the /object_info shape ComfyUI
gives these declarations, hooks only when overridden, hidden values, errors at registration."""
from __future__ import annotations

import asyncio

import pytest

from nodes.comfy_api import io, ui
from nodes.comfy_api.adapt import adapt_schema_node, is_schema_node
from nodes.comfy_api.extension import ComfyExtension, node_classes, resolve
from nodes.context import InterruptFlag, NodeContext, running
from nodes.spec import SpecError


class Widgets(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Widgets", display_name="All Widgets", category="tests", description="every widget kind",
            search_aliases=["knobs"],
            inputs=[io.Int.Input("seed", default=0, min=0, max=2**32, control_after_generate=True,
                                 display_mode=io.NumberDisplay.slider),
                    io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.5, round=0.01),
                    io.String.Input("prompt", multiline=True, placeholder="type", dynamic_prompts=True),
                    io.Boolean.Input("flag", default=True, label_on="yes", label_off="no"),
                    io.Combo.Input("mode", options=["a", "b"], default="b", tooltip="pick"),
                    io.MultiType.Input("any", types=[io.Image, io.Mask], optional=True),
                    io.Latent.Input("latent", lazy=True, optional=True)],
            outputs=[io.Latent.Output(display_name="out", tooltip="the latent"),
                     io.Int.Output(is_output_list=True)],
            is_experimental=True, not_idempotent=True)

    @classmethod
    def execute(cls, **kwargs):
        return io.NodeOutput(kwargs.get("latent"), [kwargs["seed"]])


def test_object_info_has_comfyuis_shape() -> None:
    spec = adapt_schema_node(Widgets, python_module="custom_nodes.t")
    info = spec.object_info()
    required = info["input"]["required"]
    assert required["seed"] == ["INT", {"default": 0, "min": 0, "max": 2**32, "control_after_generate": True,
                                        "display": "slider"}]
    assert required["cfg"] == ["FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.5, "round": 0.01}]
    assert required["prompt"] == ["STRING", {"multiline": True, "placeholder": "type", "dynamicPrompts": True}]
    assert required["flag"] == ["BOOLEAN", {"default": True, "label_on": "yes", "label_off": "no"}]
    assert required["mode"] == [["a", "b"], {"default": "b", "tooltip": "pick", "multiselect": False}]
    assert info["input"]["optional"] == {"any": ["IMAGE,MASK"], "latent": ["LATENT", {"lazy": True}]}
    assert info["output"] == ["LATENT", "INT"] and info["output_is_list"] == [False, True]
    assert info["output_name"] == ["out", "INT"] and info["output_tooltips"] == ["the latent", ""]
    assert info["display_name"] == "All Widgets" and info["description"] == "every widget kind"
    assert info["experimental"] is True and info["search_aliases"] == ["knobs"]
    assert spec.not_idempotent and spec.python_module == "custom_nodes.t"
    assert spec.is_changed is None and spec.validate_inputs is None and spec.check_lazy_status is None


def test_classic_view_of_a_schema_node() -> None:
    assert Widgets.RETURN_TYPES == ("LATENT", "INT") and Widgets.OUTPUT_IS_LIST == (False, True)
    assert Widgets.CATEGORY == "tests" and Widgets.FUNCTION == "EXECUTE_NORMALIZED"
    assert Widgets.INPUT_TYPES()["required"]["mode"] == ("COMBO", {"default": "b", "tooltip": "pick",
                                                                   "multiselect": False, "options": ["a", "b"]})
    assert is_schema_node(Widgets) and not is_schema_node(io.ComfyNode) and not is_schema_node(int)


class Hidden(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="HiddenUser", inputs=[io.String.Input("text")], outputs=[io.String.Output()],
                         hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo])

    @classmethod
    def check_lazy_status(cls, text):
        return []

    @classmethod
    def execute(cls, text):
        return (f"{text}:{cls.hidden.unique_id}:{cls.hidden.extra_pnginfo}:{cls.hidden.prompt}",)


def test_hidden_values_arrive_on_cls_hidden() -> None:
    spec = adapt_schema_node(Hidden)
    assert [i.name for i in spec.inputs if i.hidden] == ["unique_id", "extra_pnginfo"]
    call = spec.instantiate()
    out = getattr(call, spec.function_name)(text="t", unique_id="9", extra_pnginfo={"k": 1})
    assert out.values == ("t:9:{'k': 1}:None",)
    assert Hidden.hidden is None  # set on a per-call subclass, never on the class itself
    assert spec.check_lazy_status(text="x", unique_id="9") == []


def test_ui_helpers_give_comfyuis_dicts(tmp_path) -> None:
    from folders import Folders

    assert ui.PreviewText("hi").as_dict() == {"text": ("hi",)}
    import torch

    folders = Folders.for_base(tmp_path)
    ctx = NodeContext(prompt_id="p", node_id="1", class_type="X", interrupt=InterruptFlag(), folders=folders)
    with running(ctx):
        shown = ui.PreviewMask(torch.ones(1, 4, 5)).as_dict()
    assert shown["animated"] == (False,) and shown["images"][0]["type"] == "temp"
    assert (tmp_path / "temp" / shown["images"][0]["filename"]).is_file()


def test_malformed_schemas_fail_at_registration() -> None:
    class Twice(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Twice", inputs=[io.Int.Input("x"), io.Float.Input("x")])

    class NoSchema(io.ComfyNode):
        pass

    class BadDefault(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="BadDefault", inputs=[io.Int.Input("x", default=50, min=0, max=10)])

    with pytest.raises(SpecError, match="must be unique"):
        adapt_schema_node(Twice)
    with pytest.raises(SpecError, match="define_schema"):
        adapt_schema_node(NoSchema)
    with pytest.raises(SpecError, match="outside"):
        adapt_schema_node(BadDefault)


def test_entrypoints_sync_async_and_inside_a_running_loop() -> None:
    class Ext(ComfyExtension):
        loaded = False

        async def on_load(self):
            Ext.loaded = True

        async def get_node_list(self):
            return [Widgets]

    assert node_classes(lambda: Ext()) == [Widgets] and Ext.loaded

    async def entry():
        return Ext()

    async def inside_loop():
        return node_classes(entry)

    assert asyncio.run(inside_loop()) == [Widgets]
    assert resolve(5) == 5
    with pytest.raises(TypeError, match="get_node_list"):
        node_classes(lambda: object())


def test_custom_types_and_outputs() -> None:
    thing = io.Custom("THING")
    assert thing.Input("x").get_io_type() == "THING" and thing.Output().io_type == "THING"
    assert io.Int.Input("n").io_type == "INT" and io.Image.Output().io_type == "IMAGE"
    assert io.normalize_output(None).args == () and io.normalize_output((1, 2)).args == (1, 2)
    assert io.normalize_output({"result": (3,), "ui": {"text": ["x"]}}).ui == {"text": ["x"]}
    with pytest.raises(TypeError):
        io.normalize_output(5)
