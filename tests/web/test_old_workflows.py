"""Old and unusual UI workflows loaded into Loom's editor queue exactly the API prompt that Loom's Python
converter (checked against ComfyUI's conversions in tests/executor) gives for the same document: seeds whose
control value is a mode, a boolean (the oldest saves) or missing, converted widgets fed by PrimitiveNodes,
reroutes, muted and bypassed nodes, groups, nodes saved without widgets_values."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from executor.workflow_ui import ui_to_api
from nodes.registry import build_builtin_registry

pytestmark = pytest.mark.slow

TAIL = [20, 8, "euler", "normal", 1]


def _node(doc: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == node_id)


def _with_seed_values(doc: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    _node(out, 3)["widgets_values"] = values
    return out


def _primitive_seed(doc: dict[str, Any]) -> dict[str, Any]:
    """KSampler's seed converted to an input, fed by a PrimitiveNode (value + control), through a reroute."""
    out = copy.deepcopy(doc)
    sampler = _node(out, 3)
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 20})
    out["nodes"].append({"id": 20, "type": "PrimitiveNode", "pos": [0, 0], "size": [200, 80], "flags": {},
                         "order": 0, "mode": 0, "inputs": [], "properties": {"Run widget replace on values": False},
                         "outputs": [{"name": "INT", "type": "INT", "links": [21], "widget": {"name": "seed"}}],
                         "widgets_values": [4242, "increment"]})
    out["nodes"].append({"id": 21, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "flags": {}, "order": 1,
                         "mode": 0, "inputs": [{"name": "", "type": "*", "link": 21}],
                         "outputs": [{"name": "", "type": "INT", "links": [20]}], "properties": {}})
    out["links"] += [[21, 20, 0, 21, 0, "INT"], [20, 21, 0, 3, 4, "INT"]]
    out["last_node_id"], out["last_link_id"] = 21, 21
    return out


def _muted_and_bypassed(doc: dict[str, Any]) -> dict[str, Any]:
    """An ImageInvert bypassed between VAEDecode and SaveImage, a muted second SaveImage, and a group."""
    out = copy.deepcopy(doc)
    out["links"] = [link for link in out["links"] if link[0] != 9]
    _node(out, 8)["outputs"][0]["links"] = [30, 32]
    _node(out, 9)["inputs"][0]["link"] = 31
    out["nodes"].append({"id": 30, "type": "ImageInvert", "pos": [0, 0], "size": [200, 40], "flags": {}, "order": 8,
                         "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 30}],
                         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [31]}], "properties": {}})
    out["nodes"].append({"id": 31, "type": "SaveImage", "pos": [0, 0], "size": [200, 40], "flags": {}, "order": 9,
                         "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": 32}], "outputs": [],
                         "properties": {}, "widgets_values": ["muted"]})
    out["links"] += [[30, 8, 0, 30, 0, "IMAGE"], [31, 30, 0, 9, 0, "IMAGE"], [32, 8, 0, 31, 0, "IMAGE"]]
    out["groups"] = [{"id": 1, "title": "Sampling", "bounding": [0, 0, 500, 500], "color": "#3f789e", "flags": {}}]
    out["last_node_id"], out["last_link_id"] = 31, 32
    return out


def _variants(shared: Path) -> dict[str, dict[str, Any]]:
    base = json.loads((shared / "workflows" / "default_sd15_ui.json").read_text())
    legacy = json.loads((shared / "workflows" / "legacy_default_sd15_ui.json").read_text())
    seed = _node(base, 3)["widgets_values"][0]
    return {
        "modern": base,
        "legacy (control true, no widgets_values)": legacy,
        "control missing": _with_seed_values(base, [seed, *TAIL]),
        "control false": _with_seed_values(base, [seed, False, *TAIL]),
        "control fixed": _with_seed_values(base, [seed, "fixed", *TAIL]),
        "primitive through reroute": _primitive_seed(base),
        "muted, bypassed, grouped": _muted_and_bypassed(base),
    }


def _comparable(prompt: dict[str, Any]) -> dict[str, Any]:
    return {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()}


def test_editor_queues_what_the_converter_gives(page: Any, shared_dir: Path) -> None:
    registry = build_builtin_registry()
    for name, doc in _variants(shared_dir).items():
        for node in doc["nodes"]:
            if node["type"] == "CheckpointLoaderSimple":
                node["widgets_values"] = ["tiny_sd15.safetensors"]
        expected = _comparable(ui_to_api(doc, registry))
        page.evaluate("(doc) => window.loomApp.loadGraph(doc)", doc)
        got = _comparable(page.evaluate("() => window.loomApp.graphToPrompt().output"))
        assert got == expected, name
        if name.startswith("control"):
            assert got["3"][1]["steps"] == 20 and got["3"][1]["cfg"] == 8, name
    assert page.errors == []
