"""The one submission parser (`executor.submission`, issue 13) on its own and through POST /prompt:
API and UI formats, the body's fields, partial targets, ComfyUI's 400 bodies, constants converted
by validation and taken as they are by the run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from executor.submission import Submission, SubmissionError, parse_submission, read_submission
from harness import LiveServer, build_test_runtime, run
from nodes.registry import build_builtin_registry

API = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "hi"}, "_meta": {"title": "text"}},
       "2": {"class_type": "PreviewAny", "inputs": {"source": [1, 0]}},
       "3": {"class_type": "PrimitiveInt", "inputs": {"value": "7"}},
       "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
UI = {"version": 0.4, "links": [[1, 1, 0, 2, 0, "STRING"]],
      "nodes": [{"id": 1, "type": "PrimitiveString", "mode": 0, "inputs": [], "widgets_values": ["from ui"],
                 "outputs": [{"name": "STRING", "type": "STRING", "links": [1]}]},
                {"id": 2, "type": "PreviewAny", "mode": 0, "widgets_values": [], "outputs": [],
                 "inputs": [{"name": "source", "type": "*", "link": 1}]}]}


@pytest.fixture(scope="module")
def registry() -> Any:
    return build_builtin_registry()


def test_an_api_body_becomes_a_validated_submission(registry: Any) -> None:
    body = {"prompt": API, "client_id": "c", "prompt_id": "p1", "number": "4", "front": 1,
            "extra_data": {"extra_pnginfo": {"k": 1}}, "partial_execution_targets": ["4"]}
    got = parse_submission(body, registry)
    assert isinstance(got, Submission) and got.validated
    assert (got.prompt_id, got.number, got.front, got.client_id) == ("p1", 4.0, True, "c")
    assert got.extra_data["extra_pnginfo"] == {"k": 1} and isinstance(got.extra_data["create_time"], int)
    assert got.outputs == ["4"] and got.partial_targets == ["4"] and got.node_errors == {}
    assert got.prompt["2"]["inputs"]["source"] == ["1", 0], "links normalised by the API model"
    assert got.prompt["3"]["inputs"]["value"] == 7, "constants converted by validation"
    assert got.prompt["1"]["_meta"] == {"title": "text"}
    draft = read_submission({"prompt": API}, registry)
    assert not draft.validated and draft.prompt["3"]["inputs"]["value"] == "7" and len(draft.prompt_id) == 36


def test_a_ui_workflow_is_converted_and_kept_as_the_png_workflow(registry: Any) -> None:
    got = parse_submission({"prompt": UI}, registry)
    assert got.prompt["1"]["inputs"]["value"] == "from ui" and got.prompt["2"]["inputs"]["source"] == ["1", 0]
    assert got.extra_data["extra_pnginfo"]["workflow"] is UI and got.outputs == ["2"]


@pytest.mark.parametrize(("body", "words"), [
    ({}, "'prompt' must be a JSON object"),
    ({"prompt": API, "prompt_id": 5}, "'prompt_id' must be a string"),
    ({"prompt": API, "prompt_id": "x" * 257}, "at most 256"),
    ({"prompt": API, "extra_data": [1]}, "'extra_data' must be a JSON object"),
    ({"prompt": API, "client_id": 3}, "'client_id' must be a string"),
    ({"prompt": API, "number": True}, "'number' must be a number"),
    ({"prompt": API, "number": "soon"}, "'number' must be a number"),
    ({"prompt": API, "partial_execution_targets": "4"}, "'partial_execution_targets' must be a list"),
    ({"prompt": {"1": {"inputs": {}}}}, "'prompt' is not a valid workflow"),
])
def test_bad_fields_are_named_in_comfyuis_error_shape(registry: Any, body: dict, words: str) -> None:
    with pytest.raises(SubmissionError) as caught:
        parse_submission(body, registry)
    response = caught.value.response()
    assert response["error"]["type"] == "invalid_prompt" and words in response["error"]["message"]
    assert set(response["error"]) == {"type", "message", "details", "extra_info"} and response["node_errors"] == {}


def test_validation_errors_carry_node_errors(registry: Any) -> None:
    bad = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": "x"}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    with pytest.raises(SubmissionError) as caught:
        parse_submission({"prompt": bad}, registry)
    assert caught.value.error["type"] == "prompt_outputs_failed_validation"
    assert caught.value.node_errors["1"]["errors"][0]["type"] == "invalid_input_type"


def test_post_prompt_takes_ui_workflows_and_partial_targets(tmp_path: Path) -> None:
    async def body() -> None:
        async with LiveServer(build_test_runtime(tmp_path)) as srv:
            ui_run = await srv.post_prompt(UI)
            entry = await srv.wait_history(ui_run["prompt_id"])
            assert entry["outputs"]["2"]["text"] == ["from ui"]
            assert entry["prompt"][3]["extra_pnginfo"]["workflow"] == UI
            part = await srv.post_prompt(API, partial_execution_targets=["4"])
            entry = await srv.wait_history(part["prompt_id"])
            assert list(entry["outputs"]) == ["4"] and entry["outputs"]["4"]["text"] == ["7"]
            async with srv.session.post(srv.url + "/prompt", json={"prompt": API, "number": "x"}) as r:
                refused = await r.json()
                assert r.status == 400 and refused["error"]["type"] == "invalid_prompt"
                assert refused["node_errors"] == {}
    run(body)
