"""Each pack style's nodes run through the real runtime and executor: Loom's typed API, ComfyUI's
classic API (with folder_paths, comfy.utils, comfy.samplers, node_helpers, lists, IS_CHANGED)
and the schema API (hidden values, lazy inputs, async execute, ui helpers, validate_inputs)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from cn_env import EXAMPLE_PACKS, event_types, make_runtime, run_prompt

from executor.validate import validate_prompt


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cn_run")
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "tiny.safetensors").write_bytes(b"x")
    return make_runtime(base, "--custom-nodes-directory", str(EXAMPLE_PACKS))


def _executed(events: list) -> list[str]:
    return [d["node"] for d in event_types(events, "executing") if d.get("node") is not None]


def test_typed_pack_nodes_run_with_lazy_inputs(runtime) -> None:
    prompt = {
        "1": {"class_type": "TypedDouble", "inputs": {"value": 21}},
        "2": {"class_type": "ClassicOpenImage", "inputs": {"image": "does-not-exist.png"}},  # would raise
        "3": {"class_type": "TypedPick", "inputs": {"first": True, "a": ["1", 0], "b": ["2", 0]}},
    }
    result, events = run_prompt(runtime, prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"value": [42]}
    assert "2" not in _executed(events)  # the lazy branch not chosen never ran
    assert {"value": 1, "max": 1, "prompt_id": "p1", "node": "1"} in event_types(events, "progress")


def test_classic_pack_nodes_run_unchanged(runtime) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ClassicScale", "inputs": {"image": ["1", 0], "width": 4, "height": 4,
                                                      "method": "bilinear"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "ClassicSplit", "inputs": {"text": "x,y,z"}},
        "5": {"class_type": "ClassicJoin", "inputs": {"parts": ["4", 0], "sampler": "euler", "scheduler": "karras"}},
        "6": {"class_type": "ClassicNotify", "inputs": {"text": ["5", 0]}},
        "7": {"class_type": "ClassicModels", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "8": {"class_type": "ClassicNotify", "inputs": {"text": ["7", 0]}},
    }
    result, events = run_prompt(runtime, prompt, prompt_id="classic")
    assert result.status == "success", result.error
    assert result.outputs["6"] == {"text": ["x|y|z@euler/karras"]}
    checkpoint = Path(runtime.folders.models_directory) / "checkpoints" / "tiny.safetensors"
    assert result.outputs["8"] == {"text": [str(checkpoint)]}
    saved = result.outputs["3"]["images"][0]
    with Image.open(Path(runtime.folders.temp_directory) / saved["filename"]) as picture:
        assert picture.size == (4, 4)
    steps = [(d["value"], d["max"]) for d in event_types(events, "progress") if d["node"] == "2"]
    assert steps == [(1, 2), (2, 2)]


def test_classic_is_changed_keeps_the_cache(runtime) -> None:
    prompt = {"1": {"class_type": "ClassicNotify", "inputs": {"text": "same"}}}
    counter = sys.modules["loom_custom_nodes.classic_pack.nodes_classic"].CALLS
    before = counter["is_changed"]
    first, _ = run_prompt(runtime, prompt, prompt_id="c1")
    second, events = run_prompt(runtime, prompt, prompt_id="c2")
    assert first.status == second.status == "success"
    assert counter["is_changed"] == before + 2  # asked each prompt ...
    assert _executed(events) == [] and event_types(events, "execution_cached")[0]["nodes"] == ["1"]  # ... cached


def test_classic_open_image_through_node_helpers(runtime) -> None:
    Image.new("RGB", (5, 3)).save(Path(runtime.folders.input_directory) / "five.png")
    prompt = {"1": {"class_type": "ClassicOpenImage", "inputs": {"image": "five.png"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result, _ = run_prompt(runtime, prompt, prompt_id="open")
    assert result.status == "success", result.error
    assert result.outputs["2"]["text"] == ["15"]


def test_schema_pack_nodes_run(runtime) -> None:
    prompt = {
        "10": {"class_type": "SchemaAdd", "inputs": {"a": 3, "b": 4}},
        "11": {"class_type": "SchemaThing", "inputs": {"label": "left-one"}},
        "12": {"class_type": "SchemaThing", "inputs": {"label": "right-one"}},
        "13": {"class_type": "SchemaChoose", "inputs": {"which": "right", "left": ["11", 0], "right": ["12", 0]}},
        "14": {"class_type": "SchemaShow", "inputs": {"text": ["10", 1], "thing": ["13", 0]}},
        "15": {"class_type": "ClassicJoin", "inputs": {"parts": ["12", 1], "sampler": "euler", "scheduler": "normal"}},
        "16": {"class_type": "SchemaShow", "inputs": {"text": ["15", 0]}},
    }
    result, events = run_prompt(runtime, prompt, prompt_id="schema")
    assert result.status == "success", result.error
    assert result.outputs["14"] == {"text": ["3+4 [right-one] from 14 (with prompt)"]}
    assert result.outputs["16"] == {"text": ["right-one|RIGHT-ONE@euler/normal from 16 (with prompt)"]}
    assert "11" not in _executed(events)  # lazy: the left THING was never needed


def test_schema_ui_preview_image_and_hooks(runtime) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 6, "batch_size": 2, "color": 255}},
              "2": {"class_type": "SchemaShow", "inputs": {"text": ["3", 0], "image": ["1", 0]}},
              "3": {"class_type": "PrimitiveString", "inputs": {"value": "pic"}}}
    result, _ = run_prompt(runtime, prompt, prompt_id="preview")
    assert result.status == "success", result.error
    images = result.outputs["2"]["images"]
    assert len(images) == 2 and all(i["type"] == "temp" for i in images)
    assert all((Path(runtime.folders.temp_directory) / i["filename"]).is_file() for i in images)
    spec = runtime.registry.get("SchemaAdd")
    assert spec.is_changed(a=1, b=2) == (1, 2) and spec.validate_inputs(a=13) == "13 is unlucky"
    bad = validate_prompt({"1": {"class_type": "SchemaAdd", "inputs": {"a": 13, "b": 1}},
                           "2": {"class_type": "SchemaShow", "inputs": {"text": ["1", 1]}}}, runtime.registry)
    assert not bad.ok and bad.node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"
    assert runtime.registry.get("SchemaShow").is_changed is None


def test_example_pack_nodes_run(runtime) -> None:
    (Path(runtime.folders.input_directory) / "notes.txt").write_text("one note")
    prompt = {
        "1": {"class_type": "ExampleReadText", "inputs": {"name": "notes.txt"}},
        "2": {"class_type": "ClassicSplit", "inputs": {"text": "a,b"}},
        "3": {"class_type": "ExampleJoinText", "inputs": {"texts": ["2", 0], "separator": "+"}},
        "4": {"class_type": "ExampleLazySwitch", "inputs": {"choose": False, "on_true": ["1", 0], "on_false": ["3", 0]}},
        "5": {"class_type": "ExampleShowText", "inputs": {"text": ["4", 0]}},
        "6": {"class_type": "ExampleShowText", "inputs": {"text": ["1", 0]}},
        "7": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 3, "color": 0x808080}},
        "8": {"class_type": "ExampleBrightness", "inputs": {"image": ["7", 0], "factor": 2.0}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    result, events = run_prompt(runtime, prompt, prompt_id="example")
    assert result.status == "success", result.error
    assert result.outputs["5"] == {"text": ["a+b"]} and result.outputs["6"] == {"text": ["one note"]}
    assert [d["value"] for d in event_types(events, "progress") if d["node"] == "8"] == [1, 2, 3]
    spec = runtime.registry.get("ExampleReadText")
    assert math.isnan(spec.is_changed(name="notes.txt"))  # outside a node: no folders, always rerun
    assert spec.validate_inputs(name="notes.md") == "'notes.md' is not a .txt file"


def test_interrupt_reaches_classic_nodes(runtime) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "2": {"class_type": "ClassicScale", "inputs": {"image": ["1", 0], "width": 4, "height": 4,
                                                            "method": "area"}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    runtime.interrupt.set()
    try:
        result, events = run_prompt(runtime, prompt, prompt_id="stop")
    finally:
        runtime.interrupt.clear()
    assert result.status == "interrupted"
    assert event_types(events, "execution_interrupted")
