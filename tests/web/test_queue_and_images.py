"""Browser tests of the queue panel (running and pending, remove, cancel) on a
long run, and of LoadImage: upload with preview, then the mask painter saving
through /upload/mask."""
from __future__ import annotations

import io

import pytest

from tests.web import editor_page as ui
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def test_queue_panel_remove_pending_and_cancel_running(page):
    doc = page.evaluate("() => window.loomApp.defaultGraph()")
    latent = next(n for n in doc["nodes"] if n["type"] == "EmptyLatentImage")
    latent["widgets_values"] = [64, 64, 1]
    sampler = next(n for n in doc["nodes"] if n["type"] == "KSampler")
    sampler["widgets_values"][2] = 2000  # long enough to catch it running
    ui.load_workflow(page, doc)
    page.click("[data-tab=queue]")
    page.fill("#batch-count", "2")
    page.press("#batch-count", "Tab")
    page.click("#queue-button")
    page.wait_for_selector(".qitem.running", timeout=60_000)
    page.wait_for_selector(".qitem.pending", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "15_queue_panel.png"))
    page.click(".qitem.pending button:text-is('Remove')")
    page.wait_for_selector(".qitem.pending", state="detached", timeout=10_000)
    page.evaluate("""() => { window.__interrupted = false; window.loomApp.api.addEventListener(
        'execution_interrupted', () => { window.__interrupted = true; }); }""")
    page.click(".qitem.running button:text-is('Cancel')")
    ui.wait_for(page, "() => window.__interrupted", timeout=60)
    page.wait_for_function("() => window.loomApp.api.getQueue().then((q) => !q.queue_running.length && !q.queue_pending.length)",
                           timeout=30_000)
    assert page.evaluate("() => window.loomApp.exec.node") is None


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def test_load_image_upload_preview_and_mask(basic_page, tmp_path):
    page = basic_page
    page.click("#clear-button")
    node = ui.add_node_by_search(page, "load image", ui.canvas_point(page, 0.2, 0.2), "LoadImage")
    picture = tmp_path / "upload_me.png"
    picture.write_bytes(_png(256, 192))
    with page.expect_file_chooser() as chooser:
        page.mouse.click(*ui.widget_xy(page, node, "upload"))
    chooser.value.set_files(str(picture))
    ui.wait_for(page, "(id) => window.loomApp.graph.getNodeById(id).widgets[0].value === 'upload_me.png'", node, timeout=20)
    src = ui.saved_image_loaded(page, node, timeout=20)
    assert "filename=upload_me.png" in src and "type=input" in src
    # Paint a mask and save it.
    page.mouse.click(*ui.title_xy(page, node), button="right")
    page.click(".litecontextmenu >> text=Open in mask editor")
    canvas = page.wait_for_selector(".mask-editor canvas")
    box = canvas.bounding_box()
    ui.drag(page, (box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5),
            (box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5))
    page.screenshot(path=str(ARTIFACTS / "16_mask_editor.png"))
    page.click(".mask-editor button:text-is('Save mask')")
    page.wait_for_selector(".mask-editor", state="detached", timeout=20_000)
    value = page.evaluate("(id) => window.loomApp.graph.getNodeById(id).widgets[0].value", node)
    assert value != "upload_me.png" and value.endswith(".png")
    ui.saved_image_loaded(page, node, timeout=20)
    # The masked image is what LoadImage now runs with: its MASK has painted pixels.
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    assert prompt[str(node)]["inputs"]["image"] == value
    assert page.errors == []
