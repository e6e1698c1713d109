"""UI→API conversion on the default SD1.5 documents and on hand-made real-shaped documents
(groups, reroutes, primitives, bypass, mute, subgraphs, converted widgets), and loading files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from executor.run import Executor
from executor.validate import validate_prompt
from executor.workflow import WorkflowError, is_ui_workflow, load_workflow_file, parse_api
from executor.workflow_ui import map_widgets, ui_to_api
from tests.executor.fake_nodes import SD_NODES, KSampler, fake_registry

REG = fake_registry(*SD_NODES)
WORKFLOWS = Path(__file__).resolve().parents[2] / ".." / "shared" / "workflows"

EXPECTED_DEFAULT = {
    "4": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"},
    "3": {"seed": 685468484323813, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
          "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
    "8": {"samples": ["3", 0], "vae": ["4", 2]},
    "9": {"filename_prefix": "SD1.5", "images": ["8", 0]},
    "7": {"text": "text, watermark", "clip": ["4", 1]},
    "5": {"width": 512, "height": 512, "batch_size": 1},
    "6": {"text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle,", "clip": ["4", 1]},
}


def shared_workflow(name: str) -> dict[str, Any]:
    path = WORKFLOWS / name
    if not path.is_file():
        pytest.skip("../shared/workflows is absent")
    return json.loads(path.read_text())


def test_default_sd15_document() -> None:
    api = ui_to_api(shared_workflow("default_sd15_ui.json"), REG)
    assert {k: v["inputs"] for k, v in api.items()} == EXPECTED_DEFAULT  # the four MarkdownNotes are gone
    assert {v["class_type"] for v in api.values()} == {s.__name__ for s in SD_NODES}
    assert validate_prompt(api, REG).node_errors.keys() == {"4"}  # only: that checkpoint file is not here


def test_legacy_default_sd15_document() -> None:
    api = ui_to_api(shared_workflow("legacy_default_sd15_ui.json"), REG)
    assert api["3"]["inputs"]["seed"] == 156680208700286 and api["3"]["inputs"]["steps"] == 20  # `true` skipped
    assert api["9"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["8", 0]}  # default filled in
    assert api["6"]["inputs"]["text"].startswith("beautiful scenery")


def test_seed_control_value_is_skipped_only_when_present() -> None:
    spec = KSampler.spec()
    with_control = map_widgets(spec, [7, "increment", 5, 3.5, "heun", "karras", 0.5])
    without = map_widgets(spec, [7, 5, 3.5, "heun", "karras", 0.5])
    assert with_control == without == {"seed": 7, "steps": 5, "cfg": 3.5, "sampler_name": "heun",
                                       "scheduler": "karras", "denoise": 0.5}


def node(id: Any, type: str, widgets: Any = None, inputs: Any = (), outputs: Any = (), mode: int = 0,
         title: str | None = None) -> dict[str, Any]:
    entry = {"id": id, "type": type, "pos": [0, 0], "size": [200, 80], "flags": {}, "order": 0, "mode": mode,
             "inputs": list(inputs), "outputs": list(outputs), "properties": {}}
    if widgets is not None:
        entry["widgets_values"] = widgets
    if title:
        entry["title"] = title
    return entry


def inp(name: str, type: str, link: int | None, widget: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "type": type, "link": link}
    if widget:
        entry["widget"] = {"name": name}
    return entry


def out(type: str, links: list[int]) -> dict[str, Any]:
    return {"name": type, "type": type, "links": links, "slot_index": 0}


def legacy_document() -> dict[str, Any]:
    """0.4 format: a PrimitiveNode into a converted widget, a Reroute, a bypassed and a muted
    node, a note and a group."""
    return {
        "last_node_id": 10, "last_link_id": 6, "version": 0.4, "config": {}, "extra": {},
        "groups": [{"title": "Adders", "bounding": [0, 0, 500, 500], "color": "#3f789e", "font_size": 24}],
        "nodes": [
            node(1, "PrimitiveNode", [42, "fixed"], outputs=[{**out("INT", [1]), "widget": {"name": "a"}}]),
            node(2, "FInt", [7], outputs=[out("INT", [2])], title="Seven"),
            node(10, "Reroute", None, inputs=[inp("", "*", 2)], outputs=[out("INT", [3])]),
            node(3, "FAdd", [0, 0], inputs=[inp("a", "INT", 1, True), inp("b", "INT", 3, True)],
                 outputs=[out("INT", [4])]),
            node(5, "FAdd", [0, 100], inputs=[inp("a", "INT", 4, True)], outputs=[out("INT", [5])], mode=4),
            node(4, "FIntOut", None, inputs=[inp("value", "INT", 5)]),
            node(6, "FOut", None, inputs=[inp("value", "*", 6)], mode=2),
            node(7, "FString", ["muted source"], outputs=[out("STRING", [])], mode=2),
            node(8, "Note", ["remember to hydrate"]),
        ],
        "links": [[1, 1, 0, 3, 0, "INT"], [2, 2, 0, 10, 0, "*"], [3, 10, 0, 3, 1, "INT"], [4, 3, 0, 5, 0, "INT"],
                  [5, 5, 0, 4, 0, "INT"], [6, 2, 0, 6, 0, "INT"]],
    }


def test_reroute_primitive_bypass_mute_note() -> None:
    api = ui_to_api(legacy_document(), REG)
    assert api == {
        "2": {"inputs": {"value": 7}, "class_type": "FInt", "_meta": {"title": "Seven"}},
        "3": {"inputs": {"a": 42, "b": ["2", 0]}, "class_type": "FAdd", "_meta": {"title": "FAdd"}},
        "4": {"inputs": {"value": ["3", 0]}, "class_type": "FIntOut", "_meta": {"title": "FIntOut"}},
    }
    result = Executor(REG).execute(api, "p")
    assert result.outputs == {"4": {"value": [49]}}


def link(id: int, origin: Any, oslot: int, target: Any, tslot: int, type: str = "INT") -> dict[str, Any]:
    return {"id": id, "origin_id": origin, "origin_slot": oslot, "target_id": target, "target_slot": tslot,
            "type": type}


def subgraph_document() -> dict[str, Any]:
    """1.0 format with object links: an "Adder" subgraph (FAdd with b=5) used directly and
    nested inside a "Twice" subgraph."""
    adder = {"id": "6f1c-adder", "name": "Adder", "version": 1, "state": {},
             "inputNode": {"id": -10, "bounding": [0, 0, 10, 10]}, "outputNode": {"id": -20, "bounding": [0, 0, 10, 10]},
             "inputs": [{"id": "i0", "name": "x", "type": "INT", "linkIds": [1]}],
             "outputs": [{"id": "o0", "name": "y", "type": "INT", "linkIds": [2]}],
             "nodes": [node(1, "FAdd", [0, 5], inputs=[inp("a", "INT", 1, True), inp("b", "INT", None, True)],
                            outputs=[out("INT", [2])])],
             "links": [link(1, -10, 0, 1, 0), link(2, 1, 0, -20, 0)]}
    twice = {"id": "9a2b-twice", "name": "Twice",
             "inputs": [{"name": "x", "type": "INT", "linkIds": [1]}],
             "outputs": [{"name": "y", "type": "INT", "linkIds": [3]}],
             "nodes": [node(1, "6f1c-adder", None, inputs=[inp("x", "INT", 1)], outputs=[out("INT", [2])]),
                       node(2, "6f1c-adder", None, inputs=[inp("x", "INT", 2)], outputs=[out("INT", [3])])],
             "links": [link(1, -10, 0, 1, 0), link(2, 1, 0, 2, 0), link(3, 2, 0, -20, 0)]}
    return {
        "id": "c0ffee", "revision": 0, "last_node_id": 5, "last_link_id": 4, "version": 1,
        "nodes": [node(1, "FInt", [3], outputs=[out("INT", [1, 3])]),
                  node(2, "6f1c-adder", None, inputs=[inp("x", "INT", 1)], outputs=[out("INT", [2])], title="add 5"),
                  node(3, "FIntOut", None, inputs=[inp("value", "INT", 2)]),
                  node(4, "9a2b-twice", None, inputs=[inp("x", "INT", 3)], outputs=[out("INT", [4])]),
                  node(5, "FIntOut", None, inputs=[inp("value", "INT", 4)])],
        "links": [link(1, 1, 0, 2, 0), link(2, 2, 0, 3, 0), link(3, 1, 0, 4, 0), link(4, 4, 0, 5, 0)],
        "groups": [], "definitions": {"subgraphs": [adder, twice]}, "config": {}, "extra": {},
    }


def test_subgraphs_expand_with_parent_child_ids() -> None:
    api = ui_to_api(subgraph_document(), REG)
    assert sorted(api) == ["1", "2:1", "3", "4:1:1", "4:2:1", "5"]
    assert api["2:1"]["inputs"] == {"a": ["1", 0], "b": 5}
    assert api["4:2:1"]["inputs"] == {"a": ["4:1:1", 0], "b": 5}
    assert api["3"]["inputs"] == {"value": ["2:1", 0]} and api["5"]["inputs"] == {"value": ["4:2:1", 0]}
    result = Executor(REG).execute(api, "p")
    assert result.outputs == {"3": {"value": [8]}, "5": {"value": [13]}}


def test_muted_subgraph_instance_drops_its_nodes() -> None:
    doc = subgraph_document()
    doc["nodes"][3]["mode"] = 2
    api = ui_to_api(doc, REG)
    assert not any(k.startswith("4:") for k in api) and "value" not in api["5"]["inputs"]


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda d: d.update(nodes="no"), "$.nodes"),
    (lambda d: d["nodes"][1].pop("type"), "$.nodes[1].type"),
    (lambda d: d["nodes"][3]["inputs"][0].update(link="x"), "$.nodes[3].inputs[0].link"),
    (lambda d: d["links"].__setitem__(0, [1, 2]), "$.links[0]"),
    (lambda d: d["nodes"][2].update(widgets_values=5), "$.nodes[2].widgets_values"),
])
def test_malformed_documents_point_at_the_json_path(mutate: Any, path: str) -> None:
    doc = legacy_document()
    mutate(doc)
    with pytest.raises(WorkflowError) as raised:
        ui_to_api(doc, REG)
    assert raised.value.path.startswith(path), raised.value


def test_api_parsing_errors_and_normalisation() -> None:
    assert parse_api({1: {"class_type": "FInt", "inputs": {"x": [2, 0]}}}) == {
        "1": {"class_type": "FInt", "inputs": {"x": ["2", 0]}}}
    with pytest.raises(WorkflowError) as raised:
        parse_api({"1": {"inputs": {}}})
    assert raised.value.path == "$[\"1\"].class_type"
    with pytest.raises(WorkflowError):
        parse_api([1, 2])
    assert is_ui_workflow(legacy_document()) and not is_ui_workflow(EXPECTED_DEFAULT)


def test_load_workflow_files(tmp_path: Path) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    api = {"1": {"class_type": "FInt", "inputs": {"value": 2}}, "2": {"class_type": "FIntOut",
                                                                      "inputs": {"value": ["1", 0]}}}
    (tmp_path / "api.json").write_text(json.dumps(api))
    assert load_workflow_file(tmp_path / "api.json", REG) == (api, None)
    (tmp_path / "ui.json").write_text(json.dumps(legacy_document()))
    prompt, ui = load_workflow_file(tmp_path / "ui.json", REG)
    assert sorted(prompt) == ["2", "3", "4"] and ui == legacy_document()
    (tmp_path / "body.json").write_text(json.dumps({"prompt": api, "extra_data": {"extra_pnginfo": {"workflow": {}}}}))
    assert load_workflow_file(tmp_path / "body.json", REG)[0] == api
    info = PngInfo()
    info.add_text("prompt", json.dumps(api))
    info.add_text("workflow", json.dumps(legacy_document()))
    Image.new("RGB", (4, 4)).save(tmp_path / "both.png", pnginfo=info)
    assert load_workflow_file(tmp_path / "both.png", REG) == (api, legacy_document())
    info = PngInfo()
    info.add_text("workflow", json.dumps(legacy_document()))
    Image.new("RGB", (4, 4)).save(tmp_path / "ui.png", pnginfo=info)
    assert sorted(load_workflow_file(tmp_path / "ui.png", REG)[0]) == ["2", "3", "4"]
    Image.new("RGB", (4, 4)).save(tmp_path / "bare.png")
    with pytest.raises(WorkflowError, match="no 'prompt' or 'workflow'"):
        load_workflow_file(tmp_path / "bare.png", REG)
    (tmp_path / "bad.json").write_text('{"1": {"class_type": "FInt",\n "inputs": {]}}')
    with pytest.raises(WorkflowError, match="line 2"):
        load_workflow_file(tmp_path / "bad.json", REG)
    with pytest.raises(WorkflowError, match="cannot read"):
        load_workflow_file(tmp_path / "missing.json", REG)


def test_promoted_widget_value_on_the_instance_wins() -> None:
    """A subgraph input linked to an interior widget is a promoted widget: the instance's
    `widgets_values` hold its value (one slot per such input, in order)."""
    doc = subgraph_document()
    adder = doc["definitions"]["subgraphs"][0]
    adder["inputs"].append({"name": "b", "type": "INT", "linkIds": [3]})
    adder["nodes"][0]["inputs"][1]["link"] = 3
    adder["links"].append(link(3, -10, 1, 1, 1))
    instance = doc["nodes"][1]
    instance["inputs"].append({**inp("b", "INT", None), "widget": {"name": "b"}})
    instance["widgets_values"] = [0, 100]  # slot 0 belongs to the linked x, slot 1 to b
    api = ui_to_api(doc, REG)
    assert api["2:1"]["inputs"] == {"a": ["1", 0], "b": 100}
    assert api["4:1:1"]["inputs"]["b"] == 5  # instances without a held value keep the interior one


def test_default_document_with_the_builtin_registry() -> None:
    """The same conversion against Loom's real node declarations (titles from display names)."""
    from nodes.registry import build_builtin_registry

    registry = build_builtin_registry()
    if not all(c.__name__ in registry for c in SD_NODES):
        pytest.skip("the SD nodes are not registered in this checkout")
    api = ui_to_api(shared_workflow("default_sd15_ui.json"), registry)
    assert {k: v["inputs"] for k, v in api.items()} == EXPECTED_DEFAULT
    assert api["4"]["_meta"]["title"] == registry.get("CheckpointLoaderSimple").display_name
    checked = validate_prompt(api, registry)
    assert list(checked.node_errors) == ["4"]  # the checkpoint file is not installed here
    assert checked.node_errors["4"]["errors"][0]["type"] == "value_not_in_list"
