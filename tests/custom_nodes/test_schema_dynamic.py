"""The dynamic types of the schema API as ComfyUI (0.3.64+) lists them in /object_info:
io.Autogrow (prefix and names templates), io.DynamicCombo, io.MatchType with `output_matchtypes`;
and the sockets validation and the call use behind them."""
from __future__ import annotations

import pytest

from executor.validate_checks import types_match
from nodes.comfy_api import io
from nodes.comfy_api.adapt import adapt_schema_node

SWITCH = io.MatchType.Template("switch")


class Dynamic(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = io.Autogrow.TemplateNames(io.Image.Input("img", optional=True, tooltip="an image"),
                                          names=["first", "second"], min=0)
        return io.Schema(node_id="Dynamic", inputs=[
            io.Autogrow.Input("texts", template=io.Autogrow.TemplatePrefix(
                io.String.Input("t", multiline=True, default="x"), prefix="t", min=2, max=3), tooltip="texts"),
            io.Autogrow.Input("images", template=names, optional=True),
            io.DynamicCombo.Input("mode", options=[
                io.DynamicCombo.Option("pick", [io.Combo.Input("which", options=["a", "b"], default="b"),
                                                io.Float.Input("weight", default=0.5, min=0.0, optional=True)]),
                io.DynamicCombo.Option("none", [])], display_name="Mode"),
            io.MatchType.Input("on_true", template=SWITCH), io.MatchType.Input("on_false", template=SWITCH),
            io.Boolean.Input("flag", default=True)],
            outputs=[io.MatchType.Output(SWITCH, display_name="chosen"), io.Int.Output()],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, **kwargs):
        return io.NodeOutput(kwargs["on_true"] if kwargs["flag"] else kwargs["on_false"], 0)


def test_dynamic_inputs_are_listed_as_comfyui_lists_them() -> None:
    info = adapt_schema_node(Dynamic).object_info()
    assert info["input"]["required"]["texts"] == ["COMFY_AUTOGROW_V3", {"tooltip": "texts", "template": {
        "input": {"required": {"t": ["STRING", {"multiline": True, "default": "x", "forceInput": True}]}},
        "prefix": "t", "min": 2, "max": 3}}]
    assert info["input"]["optional"]["images"] == ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {}, "optional": {"img": ["IMAGE", {"tooltip": "an image"}]}},
        "names": ["first", "second"], "min": 0}}]
    assert info["input"]["required"]["mode"] == ["COMFY_DYNAMICCOMBO_V3", {"display_name": "Mode", "options": [
        {"key": "pick", "inputs": {
            "required": {"which": ["COMBO", {"default": "b", "multiselect": False, "options": ["a", "b"]}]},
            "optional": {"weight": ["FLOAT", {"default": 0.5, "min": 0.0}]}}},
        {"key": "none", "inputs": {"required": {}}}]}]
    template = {"template_id": "switch", "allowed_types": "*"}
    assert info["input"]["required"]["on_true"] == ["COMFY_MATCHTYPE_V3", {"template": template}]
    assert info["input_order"] == {"required": ["texts", "mode", "on_true", "on_false", "flag"],
                                   "optional": ["images"], "hidden": ["unique_id"]}
    assert info["output"] == ["COMFY_MATCHTYPE_V3", "INT"] and info["output_name"] == ["chosen", "INT"]
    assert info["output_matchtypes"] == ["switch", None]


def test_behind_the_listing_validation_and_the_call_use_the_dotted_sockets() -> None:
    spec = adapt_schema_node(Dynamic)
    sockets = {i.name: i for i in spec.inputs}
    assert not sockets["texts.t0"].optional and not sockets["texts.t1"].optional and sockets["texts.t2"].optional
    assert sockets["texts.t0"].force_input and sockets["images.first"].optional
    assert sockets["mode.which"].optional and sockets["mode"].resolve_choices() == ["pick", "none"]
    assert sockets["on_true"].type == "COMFY_MATCHTYPE_V3"
    call = spec.instantiate()
    out = getattr(call, spec.function_name)(**{"texts.t0": "a", "texts.t1": "b", "mode": "pick",
                                               "mode.which": "a", "on_true": 1, "on_false": 2, "flag": False,
                                               "unique_id": "7"})
    assert out.values == (2, 0)


def test_matchtype_links_always_validate_as_in_comfyui() -> None:
    assert types_match("COMFY_MATCHTYPE_V3", "IMAGE") and types_match("LATENT", "COMFY_MATCHTYPE_V3")
    assert not types_match("LATENT", "IMAGE")


def test_bad_templates_are_refused_with_comfyuis_message() -> None:
    with pytest.raises(ValueError, match="Allowed types must be a ComfyType or a list of ComfyTypes, got int"):
        io.MatchType.Template("t", allowed_types=[5])
    with pytest.raises(ValueError, match="max <= 100"):
        io.Autogrow.TemplatePrefix(io.Int.Input("v"), prefix="v", max=101)
    assert io.MatchType.Template("t", [io.Int, io.Custom("MY_THING")]).as_dict() == {
        "template_id": "t", "allowed_types": "INT,MY_THING"}
