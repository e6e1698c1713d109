"""Browser tests of what users bring to Loom's editor: a plain image dropped on the canvas becomes a LoadImage
node with the uploaded file, a refused upload says why, settings persist on the server, a link released on
empty canvas opens a search of the nodes that take its type, and Escape closes dialogs and menus."""
from __future__ import annotations

import io
import json
import urllib.request

import pytest
from PIL import Image

from tests.web import editor_page as ui
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def node_by_type(page, type_: str) -> int:
    return page.evaluate("(t) => window.loomApp.graph._nodes.find((n) => n.type === t).id", type_)


def test_dropped_image_becomes_a_load_image_node(page, loom_server):
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), "blue").save(buf, "PNG")
    before = len(ui.node_ids(page))
    ui.drop_file(page, "dropped-photo.png", "image/png", buf.getvalue())
    ui.wait_for(page, "(n) => window.loomApp.graph._nodes.length === n", before + 1, timeout=20)
    node = page.evaluate("""() => { const n = window.loomApp.graph._nodes.find((x) => x.type === 'LoadImage');
        return n && [n.widgets[0].value, n.pos[0], n.pos[1]]; }""")
    assert node is not None and node[0] == "dropped-photo.png"
    assert (loom_server.base / "input" / "dropped-photo.png").is_file()
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    assert any(n["class_type"] == "LoadImage" and n["inputs"]["image"] == "dropped-photo.png" for n in prompt.values())
    # A file the server refuses: the user sees the server's reason.
    ui.drop_file(page, "broken.jpg", "image/jpeg", b"this is not a jpeg")
    toast = page.wait_for_selector("#loom-toasts :text('not an image')", timeout=10_000)
    assert "broken.jpg" in toast.inner_text()
    assert len(ui.node_ids(page)) == before + 1
    page.screenshot(path=str(ARTIFACTS / "20_dropped_image.png"))


def test_settings_apply_and_persist_on_the_server(page, loom_url):
    page.click("#settings-button")
    page.wait_for_selector("#loom-settings")
    page.select_option("[data-setting='Comfy.LinkRenderMode']", "1")
    page.check("[data-setting='pysssss.SnapToGrid']")
    page.select_option("[data-setting='Comfy.ColorPalette']", "light")
    page.select_option("[data-setting='Loom.PreviewMethod']", "latent2rgb")
    page.wait_for_function("() => window.loomApp.canvas.links_render_mode === 1")
    assert page.evaluate("() => document.body.dataset.theme") == "light"
    page.keyboard.press("Escape")
    page.wait_for_selector("#loom-settings", state="detached")

    def stored() -> dict:
        with urllib.request.urlopen(loom_url + "api/settings", timeout=10) as res:
            return json.load(res)
    ui.wait_for(page, "() => true")
    settings = stored()
    assert settings["Comfy.LinkRenderMode"] == 1 and settings["pysssss.SnapToGrid"] is True
    assert settings["Comfy.ColorPalette"] == "light" and settings["Loom.PreviewMethod"] == "latent2rgb"
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    assert page.evaluate("() => [window.loomApp.canvas.links_render_mode, document.body.dataset.theme, "
                         "window.loomApp.previewMethod]") == [1, "light", "latent2rgb"]
    # Put the defaults back for the other tests on this server.
    for key, value in (("Comfy.LinkRenderMode", 2), ("pysssss.SnapToGrid", False), ("Comfy.ColorPalette", "dark"),
                       ("Loom.PreviewMethod", "default")):
        page.evaluate("([k, v]) => window.loomApp.api.postJson('settings/' + k, v)", [key, value])
    assert page.errors == []


def test_link_released_on_empty_canvas_searches_by_type(page):
    sampler = node_by_type(page, "KSampler")
    start = ui.slot_xy(page, sampler, False, 0)
    empty = ui.canvas_point(page, 0.5, 0.93)
    before = set(ui.node_ids(page))
    ui.drag(page, start, empty)
    box = page.wait_for_selector(".loom-search input")
    assert "LATENT" in box.get_attribute("placeholder")
    offered = page.evaluate("() => [...document.querySelectorAll('.loom-search li')].map((li) => li.dataset.type)")
    assert "VAEDecode" in offered and "CLIPTextEncode" not in offered and "CheckpointLoaderSimple" not in offered
    box.fill("VAEDecode")
    page.wait_for_selector(".loom-search li.selected[data-type='VAEDecode']", timeout=5000)
    page.keyboard.press("Enter")
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=len(before) + 1)
    (new,) = set(ui.node_ids(page)) - before
    link_id = ui.input_link(page, new, 0)
    origin = page.evaluate("(id) => { const l = window.loomApp.graph.links.get?.(id) ?? window.loomApp.graph.links[id];"
                           " return [l.origin_id, l.origin_slot]; }", link_id)
    assert origin == [sampler, 0]
    # Escape closes an open search box and litegraph's context menus.
    page.mouse.dblclick(*ui.canvas_point(page, 0.6, 0.9))
    page.wait_for_selector(".loom-search")
    page.keyboard.press("Escape")
    page.wait_for_selector(".loom-search", state="detached")
    assert page.errors == []


def test_add_node_menu_adds_at_the_cursor_and_node_menu_shows_once(page):
    at = ui.canvas_point(page, 0.45, 0.92)
    page.mouse.click(*at, button="right")
    page.click(".litecontextmenu .litemenu-entry:has-text('Add Node')")
    page.click(".litecontextmenu .litemenu-entry:text-is('latent')")
    before = set(ui.node_ids(page))
    page.click(".litecontextmenu .litemenu-entry:text-is('Empty Latent Image')")
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=len(before) + 1)
    (new,) = set(ui.node_ids(page)) - before
    assert page.evaluate("(id) => window.loomApp.graph.getNodeById(id).type", new) == "EmptyLatentImage"
    pos = page.evaluate("(id) => window.loomApp.graph.getNodeById(id).pos", new)
    assert ui.screen_of(page, *pos) == pytest.approx(at, abs=2)
    assert page.query_selector_all(".litecontextmenu") == []

    sampler = node_by_type(page, "KSampler")
    page.mouse.click(*ui.title_xy(page, sampler), button="right")
    page.wait_for_selector(".litecontextmenu")
    entries = page.evaluate("() => [...document.querySelectorAll('.litecontextmenu .litemenu-entry')]"
                            ".map((e) => e.innerText)")
    assert len(page.query_selector_all(".litecontextmenu")) == 1
    assert entries.count("Convert seed to input") == 1 and "Remove" in entries
    page.keyboard.press("Escape")
    page.wait_for_selector(".litecontextmenu", state="detached")
    assert page.errors == []


DRAWN_TEXT = """(scale) => {
    const app = window.loomApp;
    const seen = [];
    const original = CanvasRenderingContext2D.prototype.fillText;
    CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        seen.push([String(text), this.font]);
        return original.call(this, text, ...rest);
    };
    try {
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = [20, 20];
        app.canvas.draw(true, true);
    } finally {
        CanvasRenderingContext2D.prototype.fillText = original;
    }
    return seen;
}"""


def test_markdown_notes_render_and_titles_stay_readable_when_zoomed_out(page):
    doc = page.evaluate("() => window.loomApp.defaultGraph()")
    doc["nodes"].append({"id": 50, "type": "MarkdownNote", "pos": [30, 30], "size": [420, 220], "flags": {},
                         "order": 9, "mode": 0, "properties": {},
                         "widgets_values": ["## Model link\n\n**checkpoints**: put them in `models/`\n\n- first item"]})
    doc["last_node_id"] = 50
    page.evaluate("(doc) => window.loomApp.loadGraph(doc)", doc)
    drawn = page.evaluate(DRAWN_TEXT, 1.0)
    texts = [t for t, _ in drawn]
    assert "Model" in texts and "##" not in " ".join(texts) and "**checkpoints**:" not in texts
    fonts = {t: f for t, f in drawn}
    assert "bold" in fonts["Model"] and "bold" in fonts["checkpoints"] and "monospace" in fonts["models/"]
    assert "•" in texts
    overview = page.evaluate(DRAWN_TEXT, 0.3)
    titles = {t: f for t, f in overview}
    assert "KSampler" in titles, "titles are drawn at overview zoom"
    size = float(titles["KSampler"].split("px")[0].split()[-1])
    assert size * 0.3 >= 13.5, "a title is about 14 px on screen"
    assert page.errors == []
