"""The headless runner: overrides, progress display, output paths, exit statuses."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from config import Override
from executor.headless import (EXIT_FAILED, EXIT_INVALID, EXIT_OK, OverrideError, apply_overrides, output_paths,
                               parse_value, run_headless)
from executor.run import Executor
from nodes.spec import Input, Node, String
from runtime import assemble_runtime
from tests.executor.fake_nodes import fake_registry


class FakeSave(Node):
    """Pretends to save a file and reports it as SaveImage does."""
    OUTPUT_NODE = True
    INPUTS = [Input("value", "*"), String("filename_prefix", "x")]
    OUTPUTS = []

    def execute(self, value: Any, filename_prefix: str) -> dict[str, Any]:
        return {"ui": {"images": [{"filename": f"{filename_prefix}_00001_.png", "subfolder": "sub", "type": "output"}]}}


class FakeFolders:
    def __init__(self, root: Path) -> None:
        self.output_directory = root / "output"

    def directory_of_type(self, kind: str) -> Path | None:
        return self.output_directory if kind == "output" else None

    def list_files(self, kind: str) -> list[str]:
        return []


def runtime(tmp_path: Path) -> Any:
    registry = fake_registry(FakeSave)
    folders = FakeFolders(tmp_path)
    return assemble_runtime(registry, folders, executor=Executor(registry, folders=folders))


PROMPT = {"1": {"class_type": "FInt", "inputs": {"value": 2}, "_meta": {"title": "two"}},
          "2": {"class_type": "FProgress", "inputs": {"steps": 2}},
          "3": {"class_type": "FAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
          "4": {"class_type": "FOut", "inputs": {"value": ["3", 0]}},
          "5": {"class_type": "FakeSave", "inputs": {"value": ["3", 0], "filename_prefix": "pic"}}}


def run(tmp_path: Path, prompt: Any, overrides: list[Override] = ()) -> tuple[int, str, str]:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(prompt))
    out, err = io.StringIO(), io.StringIO()
    code = run_headless(runtime(tmp_path), path, overrides, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_runs_and_prints_output_paths(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, PROMPT)
    assert code == EXIT_OK
    assert out.splitlines() == [str(tmp_path / "output" / "sub" / "pic_00001_.png")]
    assert "node 4: 4" in err and "[#" in err and "2/2" in err and "node 2 FProgress" in err


def test_overrides_by_id_and_title(tmp_path: Path) -> None:
    code, _, err = run(tmp_path, PROMPT, [Override("two", "value", "40"), Override("5", "filename_prefix", "other")])
    assert code == EXIT_OK and "node 4: 42" in err
    prompt = json.loads(json.dumps(PROMPT))
    with pytest.raises(OverrideError, match="no input 'valu'"):
        apply_overrides(prompt, [Override("1", "valu", "3")], fake_registry())
    with pytest.raises(OverrideError, match="no node with id or title 'nine'"):
        apply_overrides(prompt, [Override("nine", "value", "3")], fake_registry())
    assert parse_value("42") == 42 and parse_value("true") is True and parse_value("abc") == "abc"
    assert parse_value('"5"') == "5" and parse_value("[1, 2]") == [1, 2]


def test_validation_errors_are_readable(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, PROMPT, [Override("1", "value", "99999")])
    assert code == EXIT_INVALID and out == ""
    assert "error: Prompt outputs failed validation" in err
    assert "node 1 (FInt, 'two'): Value 99999 bigger than max of 1000: value" in err


def test_node_failure_exits_non_zero(tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "FInt", "inputs": {"value": 1}},
              "2": {"class_type": "FFail", "inputs": {"value": ["1", 0], "message": "disk on fire"}},
              "3": {"class_type": "FOut", "inputs": {"value": ["2", 0]}}}
    code, _, err = run(tmp_path, prompt)
    assert code == EXIT_FAILED and "node 2 (FFail) failed: RuntimeError: disk on fire" in err


def test_unreadable_workflow(tmp_path: Path) -> None:
    (tmp_path / "wf.json").write_text("{nope")
    err = io.StringIO()
    assert run_headless(runtime(tmp_path), tmp_path / "wf.json", stderr=err) == EXIT_INVALID
    assert "invalid JSON" in err.getvalue()


def test_output_paths_without_folders() -> None:
    assert output_paths({"1": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}, None) == [
        Path(".") / "" / "a.png"]


def test_main_runs_a_workflow_with_builtin_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import main

    path = tmp_path / "wf.json"
    path.write_text(json.dumps({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}, "_meta": {"title": "greeting"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": " world",
                                                              "delimiter": ""}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}))
    code = main.main(["run", str(path), "--set", 'greeting.value="bye"', "--base-directory", str(tmp_path)], {})
    assert code == 0 and "node 3: bye world" in capsys.readouterr().err


def test_main_saves_images_and_prints_their_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real EmptyImage → ImageInvert → SaveImage from a UI document: the printed path is a PNG
    carrying the prompt and the workflow."""
    import main
    from PIL import Image

    from nodes.registry import build_builtin_registry

    if not all(c in build_builtin_registry() for c in ("EmptyImage", "ImageInvert", "SaveImage")):
        pytest.skip("image nodes not registered")
    ui = {"version": 0.4, "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]], "groups": [],
          "nodes": [{"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [8, 4, 1, 0],
                     "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
                    {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
                     "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
                    {"id": 3, "type": "SaveImage", "mode": 0, "title": "out", "widgets_values": ["run/test"],
                     "inputs": [{"name": "images", "type": "IMAGE", "link": 2}]}]}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(ui))
    code = main.main(["run", str(path), "--base-directory", str(tmp_path), "--set", "out.filename_prefix=x/y"], {})
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 1
    saved = Path(out[0])
    assert saved.is_file() and saved.parent == tmp_path / "output" / "x"
    with Image.open(saved) as image:
        assert image.size == (8, 4) and image.getpixel((0, 0))[:3] == (255, 255, 255)
        assert json.loads(image.text["prompt"])["3"]["inputs"]["filename_prefix"] == "x/y"
        assert json.loads(image.text["workflow"]) == ui
