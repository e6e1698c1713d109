"""Browser tests of editing by keyboard and mouse (selection, copy and paste
with links, bypass and mute, undo and redo, widget to input, groups,
collapse), model-list refresh, batch count and websocket reconnection."""
from __future__ import annotations

import pytest

from tests.web import editor_page as ui
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def node_by_type(page, type_: str) -> int:
    return page.evaluate("(t) => window.loomApp.graph._nodes.find((n) => n.type === t).id", type_)


def title_xy(page, node_id: int) -> tuple[float, float]:
    x, y = page.evaluate("(id) => { const n = window.loomApp.graph.getNodeById(id); return [n.pos[0] + 40, n.pos[1] - 15]; }", node_id)
    return ui.screen_of(page, x, y)


def mode(page, node_id: int) -> int:
    return page.evaluate("(id) => window.loomApp.graph.getNodeById(id).mode", node_id)


def test_bypass_mute_undo_redo(page):
    ks = node_by_type(page, "KSampler")
    page.mouse.click(*title_xy(page, ks))
    page.keyboard.press("Control+b")
    assert mode(page, ks) == 4
    assert str(ks) not in page.evaluate("() => window.loomApp.graphToPrompt().output")
    page.keyboard.press("Control+m")
    assert mode(page, ks) == 2
    page.keyboard.press("Control+z")
    page.wait_for_function("(id) => window.loomApp.graph.getNodeById(id).mode === 4", arg=ks)
    page.keyboard.press("Control+z")
    page.wait_for_function("(id) => window.loomApp.graph.getNodeById(id).mode === 0", arg=ks)
    page.keyboard.press("Control+y")
    page.wait_for_function("(id) => window.loomApp.graph.getNodeById(id).mode === 4", arg=ks)
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function("(id) => window.loomApp.graph.getNodeById(id).mode === 2", arg=ks)
    page.screenshot(path=str(ARTIFACTS / "08_muted_sampler.png"))
    assert page.errors == []


def test_box_select_copy_paste_keeps_links(page):
    dec = node_by_type(page, "VAEDecode")
    save = node_by_type(page, "SaveImage")
    # Box-select the decoder and the saver with Ctrl+drag around them.
    box = page.evaluate("""([a, b]) => { const g = window.loomApp.graph; const n1 = g.getNodeById(a), n2 = g.getNodeById(b);
        return [Math.min(n1.pos[0], n2.pos[0]) - 20, Math.min(n1.pos[1], n2.pos[1]) - 50,
                Math.max(n1.pos[0] + n1.size[0], n2.pos[0] + n2.size[0]) + 20, Math.max(n1.pos[1] + n1.size[1], n2.pos[1] + n2.size[1]) + 20]; }""",
                        [dec, save])
    page.keyboard.down("Control")
    ui.drag(page, ui.screen_of(page, box[0], box[1]), ui.screen_of(page, box[2], box[3]))
    page.keyboard.up("Control")
    selected = page.evaluate("() => Object.keys(window.loomApp.canvas.selected_nodes).map(Number).sort()")
    assert selected == sorted([dec, save])
    before = page.evaluate("() => window.loomApp.graph._nodes.length")
    page.keyboard.press("Control+c")
    page.mouse.move(*ui.screen_of(page, box[0], box[3] + 100))
    page.keyboard.press("Control+Shift+v")  # paste keeping the links into the copies
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=before + 2)
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    decs = [k for k, v in prompt.items() if v["class_type"] == "VAEDecode"]
    assert len(saves) == 2 and len(decs) == 2
    new_dec = max(decs, key=int)
    new_save = max(saves, key=int)
    assert prompt[new_save]["inputs"]["images"] == [new_dec, 0], "the link between the copies"
    ks = str(node_by_type(page, "KSampler"))
    assert prompt[new_dec]["inputs"]["samples"] == [ks, 0], "Ctrl+Shift+V keeps incoming links"
    page.keyboard.press("Control+z")
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=before)


def test_widget_to_input_group_and_collapse(page):
    ks = node_by_type(page, "KSampler")
    page.mouse.click(*title_xy(page, ks), button="right")
    page.click(".litecontextmenu >> text=Convert steps to input")
    names = page.evaluate("(id) => window.loomApp.graph.getNodeById(id).inputs.map((i) => i.name)", ks)
    assert "steps" in names
    # A primitive drives the converted input.
    at = ui.screen_of(page, *page.evaluate("(id) => { const n = window.loomApp.graph.getNodeById(id); return [n.pos[0], n.pos[1] + 500]; }", ks))
    prim = ui.add_node_by_search(page, "primitive", at, "PrimitiveNode")
    slot = names.index("steps")
    ui.connect(page, prim, 0, ks, slot)
    assert ui.input_link(page, ks, slot) is not None
    page.evaluate("(id) => { window.loomApp.graph.getNodeById(id).widgets[0].value = 7; }", prim)
    prompt = page.evaluate("() => window.loomApp.graphToPrompt().output")
    assert prompt[str(ks)]["inputs"]["steps"] == 7
    assert str(prim) not in prompt
    page.mouse.click(*title_xy(page, ks), button="right")
    page.click(".litecontextmenu >> text=Convert steps to widget")
    assert "steps" not in page.evaluate("(id) => window.loomApp.graph.getNodeById(id).inputs.map((i) => i.name)", ks)
    # Collapse from the node menu.
    page.mouse.click(*title_xy(page, ks), button="right")
    page.click(".litecontextmenu >> text=Collapse")
    assert page.evaluate("(id) => !!window.loomApp.graph.getNodeById(id).flags.collapsed", ks)
    # A group from the canvas menu.
    page.mouse.click(*ui.screen_of(page, 1300, 700), button="right")
    page.click(".litecontextmenu >> text=Add Group")
    assert page.evaluate("() => window.loomApp.serialize().groups.length") == 2
    page.screenshot(path=str(ARTIFACTS / "09_editing.png"))
    assert page.errors == []


def test_refresh_model_lists(page, loom_server):
    if loom_server.base is None:
        pytest.skip("needs the server's base directory")
    import shutil

    src = loom_server.base / "models" / "checkpoints" / "tiny_sd15.safetensors"
    dst = src.with_name("zz_refreshed.safetensors")
    shutil.copy(src, dst)
    try:
        page.click("#refresh-button")
        ui.wait_for(page, """() => window.loomApp.graph._nodes.find((n) => n.type === 'CheckpointLoaderSimple')
            .widgets[0].options.values.includes('zz_refreshed.safetensors')""", timeout=20)
    finally:
        dst.unlink()


def test_websocket_reconnects(basic_page):
    page = basic_page
    page.evaluate("() => window.loomApp.api.socket.close()")
    page.wait_for_selector("#connection.bad", timeout=5000)
    page.wait_for_selector("#connection.ok", timeout=15000)
    assert page.evaluate("() => window.loomApp.api.socket.readyState") == 1
