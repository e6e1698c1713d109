"""Browser tests of the editor in web/ against a real Loom server with a tiny
checkpoint: page load, building and running the text-to-image graph by UI
actions, file drops (JSON and PNG), validation errors on the right nodes and a
500-node graph. Screenshots go to test-artifacts/web/."""
from __future__ import annotations

import io
import json

import pytest

from tests.web import editor_page as ui
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def canvas_point(page, fx: float, fy: float) -> tuple[float, float]:
    r = page.eval_on_selector("#graph-canvas", "el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }")
    return (r[0] + r[2] * fx, r[1] + r[3] * fy)


def test_page_loads_without_console_errors(page):
    page.wait_for_timeout(1000)
    shot(page, "01_loaded_default")
    types = sorted(page.evaluate("() => window.loomApp.graph._nodes.map((n) => n.type)"))
    assert types == sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode",
                            "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"])
    assert page.errors == []


def build_text_to_image(page) -> dict[str, int]:
    """Add the seven nodes through the search box and wire them by mouse."""
    page.click("#clear-button")
    page.wait_for_function("() => window.loomApp.graph._nodes.length === 0")
    page.evaluate("() => { window.loomApp.canvas.ds.offset = [0, 0]; window.loomApp.canvas.ds.scale = 0.6; }")
    spots = {
        "ckpt": ("load checkpoint", "CheckpointLoaderSimple", 0.03, 0.30),
        "pos": ("clip text encode", "CLIPTextEncode", 0.30, 0.05),
        "neg": ("clip text encode", "CLIPTextEncode", 0.30, 0.45),
        "latent": ("empty latent", "EmptyLatentImage", 0.30, 0.80),
        "sampler": ("ksampler", "KSampler", 0.58, 0.05),
        "decode": ("vae decode", "VAEDecode", 0.80, 0.05),
        "save": ("save image", "SaveImage", 0.80, 0.30),
    }
    ids = {}
    for key, (query, expect, fx, fy) in spots.items():
        ids[key] = ui.add_node_by_search(page, query, canvas_point(page, fx, fy), expect)
    wires = [("ckpt", 0, "sampler", 0), ("ckpt", 1, "pos", 0), ("ckpt", 1, "neg", 0),
             ("pos", 0, "sampler", 1), ("neg", 0, "sampler", 2), ("latent", 0, "sampler", 3),
             ("sampler", 0, "decode", 0), ("ckpt", 2, "decode", 1), ("decode", 0, "save", 0)]
    for a, a_slot, b, b_slot in wires:
        ui.connect(page, ids[a], a_slot, ids[b], b_slot)
        assert ui.input_link(page, ids[b], b_slot) is not None, f"{a}->{b} did not connect"
    # Type checking: CLIP cannot feed the MODEL input.
    ui.connect(page, ids["ckpt"], 1, ids["sampler"], 0)
    origin = page.evaluate("""([id]) => { const g = window.loomApp.graph; const l = g.links.get
        ? g.links.get(g.getNodeById(id).inputs[0].link) : g.links[g.getNodeById(id).inputs[0].link];
        return l.origin_slot; }""", [ids["sampler"]])
    assert origin == 0, "a CLIP output replaced the MODEL link"
    ui.set_text(page, ids["pos"], "text", "a red apple on a table")
    ui.set_text(page, ids["neg"], "text", "blurry")
    ui.set_number(page, ids["latent"], "width", 64)
    ui.set_number(page, ids["latent"], "height", 64)
    ui.set_number(page, ids["sampler"], "steps", 3)
    return ids


def test_build_default_graph_by_ui_and_run_it(page):
    ids = build_text_to_image(page)
    assert ui.widget_value(page, ids["pos"], "text") == "a red apple on a table"
    shot(page, "02_built_by_ui")
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    ks = prompt[str(ids["sampler"])]["inputs"]
    assert ks["steps"] == 3 and ks["model"] == [str(ids["ckpt"]), 0]
    seed_before = ui.widget_value(page, ids["sampler"], "seed")
    page.evaluate("""() => { const app = window.loomApp; window.__progress = []; window.__seen = new Set();
        window.__previews = 0;
        app.api.addEventListener('progress', (e) => window.__progress.push(e.detail));
        app.api.addEventListener('b_preview', () => { window.__previews++; });
        // Sample what the canvas shows as executing (the highlighted node) while it runs.
        window.__sampler = setInterval(() => { if (app.exec.node) window.__seen.add(app.exec.node); }, 5); }""")
    page.click("#graph-canvas", position={"x": 5, "y": 5})
    page.keyboard.press("Control+Enter")
    ui.wait_for(page, """(id) => { const n = window.loomApp.graph.getNodeById(id);
        return n.imgs && n.imgs.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0; }""",
                ids["save"], timeout=300)
    progress = page.evaluate("() => window.__progress")
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 3
    seen = page.evaluate("() => { clearInterval(window.__sampler); return [...window.__seen]; }")
    assert str(ids["sampler"]) in seen, f"the sampler was never shown as executing: {seen}"
    previews = page.evaluate("() => window.__previews")
    (ARTIFACTS / "previews.txt").write_text(f"{previews} latent preview frames during a 3-step run\n")
    assert previews >= 1, "no latent preview frames (the server runs with --preview-method latent2rgb)"
    height = page.evaluate("(id) => window.loomApp.graph.getNodeById(id).size[1]", ids["sampler"])
    assert height >= page.evaluate("(id) => window.loomApp.graph.getNodeById(id).computeSize()[1]", ids["sampler"]) + 200, \
        "the sampler made room below its widgets to show the live preview"
    assert ui.widget_value(page, ids["sampler"], "seed") != seed_before, "randomize after queueing"
    page.wait_for_timeout(500)
    shot(page, "03_output_on_save_node")
    page.click("[data-tab=history]")
    page.wait_for_selector(".hitem img.thumb", timeout=10_000)
    page.click("[data-tab=gallery]")
    page.wait_for_selector(".gallery img.thumb", timeout=10_000)
    shot(page, "04_gallery")
    assert page.errors == []


def default_doc(page) -> dict:
    return page.evaluate("() => window.loomApp.defaultGraph()")


def test_load_json_and_png_by_drop(page):
    doc = default_doc(page)
    doc["nodes"][1]["widgets_values"] = ["dropped json prompt"]
    ui.load_workflow(page, doc)
    assert ui.widget_value(page, doc["nodes"][1]["id"], "text") == "dropped json prompt"

    from PIL import Image, PngImagePlugin

    doc["nodes"][1]["widgets_values"] = ["dropped png prompt"]
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(doc))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG", pnginfo=info)
    ui.drop_file(page, "image.png", "image/png", buf.getvalue())
    ui.wait_for(page, "(id) => window.loomApp.graph.getNodeById(id)?.widgets[0].value === 'dropped png prompt'",
                doc["nodes"][1]["id"], timeout=10)
    # A PNG with only an API prompt is rebuilt into a graph.
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, "PNG", pnginfo=info)
    page.click("#clear-button")
    ui.drop_file(page, "api.png", "image/png", buf.getvalue())
    ui.wait_for(page, "() => window.loomApp.graph._nodes.length === 7", timeout=10)
    again = page.evaluate("() => window.loomApp.graphToPrompt().output")
    assert sorted(n["class_type"] for n in again.values()) == sorted(n["class_type"] for n in prompt.values())
    shot(page, "05_loaded_from_png")
    # The workflow survives a reload (localStorage).
    page.wait_for_timeout(400)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("() => window.loomApp.graph._nodes.length") == 7
    assert page.errors == []


def test_broken_graph_shows_errors_on_the_right_nodes(page):
    doc = default_doc(page)
    by_type = {n["type"]: n for n in doc["nodes"]}
    decode, sampler = by_type["VAEDecode"], by_type["KSampler"]
    vae_link = decode["inputs"][1]["link"]
    doc["links"] = [lk for lk in doc["links"] if lk[0] != vae_link]
    decode["inputs"][1]["link"] = None
    for n in doc["nodes"]:
        for out in n.get("outputs", []):
            out["links"] = [x for x in out.get("links") or [] if x != vae_link]
    sampler["widgets_values"][2] = 20000  # steps above the maximum
    ui.load_workflow(page, doc)
    page.click("#queue-button")
    marks = ui.wait_for(page, "() => Object.keys(window.loomApp.marks.nodes).length && window.loomApp.marks.nodes",
                        timeout=20)
    assert set(marks) == {str(decode["id"]), str(sampler["id"])}
    assert "vae" in marks[str(decode["id"])]["inputs"]
    assert "steps" in marks[str(sampler["id"])]["inputs"]
    page.wait_for_selector(".loom-toast.error")
    page.wait_for_timeout(300)
    shot(page, "06_validation_errors")


def five_hundred_nodes() -> dict:
    """250 EmptyImage -> ImageInvert pairs in a grid: 500 nodes, 250 links."""
    nodes, links = [], []
    for i in range(250):
        x, y = (i % 25) * 700, (i // 25) * 260
        a, b, link = 2 * i + 1, 2 * i + 2, i + 1
        nodes.append({"id": a, "type": "EmptyImage", "pos": [x, y], "size": [315, 130], "flags": {},
                      "order": a, "mode": 0, "inputs": [],
                      "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [link]}],
                      "properties": {}, "widgets_values": [512, 512, 1, 0]})
        nodes.append({"id": b, "type": "ImageInvert", "pos": [x + 380, y], "size": [210, 46], "flags": {},
                      "order": b, "mode": 0,
                      "inputs": [{"name": "image", "type": "IMAGE", "link": link}],
                      "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}], "properties": {}})
        links.append([link, a, 0, b, 0, "IMAGE"])
    return {"last_node_id": 500, "last_link_id": 250, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.5, "offset": [0, 0]}}, "version": 0.4}


def test_500_node_graph_loads_and_pans(basic_page):
    page = basic_page
    ui.load_workflow(page, five_hundred_nodes())
    page.evaluate("""() => { window.__frames = 0; const tick = () => { window.__frames++;
        requestAnimationFrame(tick); }; requestAnimationFrame(tick); }""")
    start = page.evaluate("() => [...window.loomApp.canvas.ds.offset]")
    a = ui.screen_of(page, 1000, 215)  # empty canvas between two rows of nodes
    page.mouse.move(*a)
    page.mouse.down()
    t0 = page.evaluate("() => [performance.now(), window.__frames]")
    for k in range(60):
        page.mouse.move(a[0] - 10 * k, a[1] - 4 * k)
    t1 = page.evaluate("() => [performance.now(), window.__frames]")
    page.mouse.up()
    end = page.evaluate("() => [...window.loomApp.canvas.ds.offset]")
    assert end[0] < start[0] - 300, f"the canvas did not pan: {start} -> {end}"
    fps = (t1[1] - t0[1]) / ((t1[0] - t0[0]) / 1000)
    (ARTIFACTS / "pan_fps.txt").write_text(f"{fps:.1f} frames/s while panning 500 nodes\n")
    assert fps > 5, f"panning 500 nodes ran at {fps:.1f} frames/s"
    shot(page, "07_500_nodes")
    assert page.errors == []


def test_comfyui_workflow_file_round_trips(page, shared_dir):
    path = shared_dir / "workflows" / "default_sd15_ui.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    doc = json.loads(path.read_text())
    ui.drop_file(page, path.name, "application/json", path.read_bytes())
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=len(doc["nodes"]))
    saved = page.evaluate("() => window.loomApp.serialize()")
    by_id = {n["id"]: n for n in saved["nodes"]}
    for node in doc["nodes"]:
        assert by_id[node["id"]].get("widgets_values", []) == node.get("widgets_values", []), node["type"]
    assert sorted(map(tuple, saved["links"])) == sorted(map(tuple, doc["links"]))
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    assert sorted(prompt) == ["3", "4", "5", "6", "7", "8", "9"]
    assert prompt["3"]["inputs"]["seed"] == 685468484323813
    shot(page, "14_comfyui_default_workflow")
