"""Browser tests that need only the server and its basic image nodes
(EmptyImage, ImageInvert, SaveImage, PrimitiveInt): build a graph by UI
actions, run it, see the image, the history and the gallery; seed-style
control after generate on a primitive driving a converted widget; validation
errors on the right nodes and inputs; hover tooltips."""
from __future__ import annotations

import json

import pytest

from tests.web import editor_page as ui
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def build_image_graph(page) -> dict[str, int]:
    page.click("#clear-button")
    page.wait_for_function("() => window.loomApp.graph._nodes.length === 0")
    page.evaluate("() => { window.loomApp.canvas.ds.offset = [0, 0]; window.loomApp.canvas.ds.scale = 1; }")
    ids = {
        "empty": ui.add_node_by_search(page, "empty image", ui.canvas_point(page, 0.05, 0.1), "EmptyImage"),
        "invert": ui.add_node_by_search(page, "invert image", ui.canvas_point(page, 0.35, 0.1), "ImageInvert"),
        "save": ui.add_node_by_search(page, "save image", ui.canvas_point(page, 0.6, 0.1), "SaveImage"),
    }
    ui.connect(page, ids["empty"], 0, ids["invert"], 0)
    ui.connect(page, ids["invert"], 0, ids["save"], 0)
    ui.set_number(page, ids["empty"], "width", 48)
    ui.set_number(page, ids["empty"], "height", 32)
    return ids


def test_run_a_graph_built_by_ui(basic_page):
    page = basic_page
    ids = build_image_graph(page)
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    assert prompt[str(ids["invert"])]["inputs"]["image"] == [str(ids["empty"]), 0]
    assert prompt[str(ids["empty"])]["inputs"]["width"] == 48
    page.click("#queue-button")
    src = ui.saved_image_loaded(page, ids["save"], timeout=120)
    assert "view?" in src and "type=output" in src
    size = page.evaluate("(id) => { const i = window.loomApp.graph.getNodeById(id).imgs[0]; return [i.naturalWidth, i.naturalHeight]; }", ids["save"])
    assert size == [48, 32]
    page.screenshot(path=str(ARTIFACTS / "10_basic_run.png"))
    page.click("[data-tab=history]")
    page.wait_for_selector(".hitem img.thumb", timeout=10_000)
    # Reload the workflow of the past run from the history panel.
    page.click("#clear-button")
    page.click(".hitem button:text-is('Load')")
    page.wait_for_function("() => window.loomApp.graph._nodes.length === 3")
    page.click("[data-tab=gallery]")
    page.wait_for_selector(".gallery img.thumb", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "11_history_gallery.png"))
    assert page.errors == []


def test_primitive_with_control_after_generate(basic_page):
    page = basic_page
    ids = build_image_graph(page)
    page.mouse.click(*ui.title_xy(page, ids["empty"]), button="right")
    page.click(".litecontextmenu >> text=Convert color to input")
    slot = page.evaluate("(id) => window.loomApp.graph.getNodeById(id).inputs.findIndex((i) => i.name === 'color')", ids["empty"])
    prim = ui.add_node_by_search(page, "PrimitiveInt", ui.canvas_point(page, 0.05, 0.6), "PrimitiveInt")
    ui.connect(page, prim, 0, ids["empty"], slot)
    ui.set_number(page, prim, "value", 100)
    ui.set_combo(page, prim, "control_after_generate", "increment")
    page.click("#queue-button")
    ui.saved_image_loaded(page, ids["save"], timeout=120)
    assert ui.widget_value(page, prim, "value") == 101, "increment applies after queueing"
    history = page.evaluate("() => window.loomApp.api.getHistory()")
    sent = [h["prompt"][2] for h in history.values()]
    assert any(p.get(str(ids["empty"]), {}).get("inputs", {}).get("color") == [str(prim), 0] for p in sent)
    assert page.errors == []


def test_validation_errors_on_the_right_nodes(basic_page):
    page = basic_page
    ids = build_image_graph(page)
    doc = page.evaluate("() => window.loomApp.serialize()")
    empty = next(n for n in doc["nodes"] if n["id"] == ids["empty"])
    empty["widgets_values"][0] = 99999  # width above the maximum
    invert = next(n for n in doc["nodes"] if n["id"] == ids["invert"])
    doc["links"] = [lk for lk in doc["links"] if lk[0] != invert["inputs"][0]["link"]]
    invert["inputs"][0]["link"] = None
    empty["outputs"][0]["links"] = []
    ui.drop_file(page, "broken.json", "application/json", json.dumps(doc).encode())
    page.wait_for_function("() => window.loomApp.graph.getNodeById(%d).inputs[0].link === null" % ids["invert"])
    page.keyboard.press("Control+Enter")
    marks = ui.wait_for(page, "() => Object.keys(window.loomApp.marks.nodes).length && window.loomApp.marks.nodes", timeout=20)
    assert "image" in marks[str(ids["invert"])]["inputs"]
    if str(ids["empty"]) in marks:  # an unreachable node may be reported or not
        assert "width" in marks[str(ids["empty"])]["inputs"]
    page.wait_for_selector(".loom-toast.error")
    page.screenshot(path=str(ARTIFACTS / "12_basic_errors.png"))


def test_tooltips_show_descriptions(basic_page):
    page = basic_page
    ids = build_image_graph(page)
    page.mouse.move(*ui.title_xy(page, ids["save"]))
    page.mouse.move(*ui.title_xy(page, ids["save"]))
    tip = page.wait_for_selector(".loom-tooltip", state="visible", timeout=5000)
    assert "Saves the input images" in tip.text_content()


def test_batch_count_queues_several_prompts(basic_page):
    page = basic_page
    build_image_graph(page)
    before = len(page.evaluate("() => window.loomApp.api.getHistory()"))
    page.fill("#batch-count", "3")
    page.press("#batch-count", "Tab")
    page.click("[data-tab=queue]")
    page.click("#queue-button")
    ui.wait_for(page, "(n) => window.loomApp.api.getHistory().then((h) => Object.keys(h).length >= n)",
                before + 3, timeout=120)
    page.click("[data-tab=history]")
    page.wait_for_function("(n) => document.querySelectorAll('.hitem').length >= n", arg=before + 3, timeout=10_000)
    assert page.errors == []
