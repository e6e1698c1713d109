"""Driving the editor like a person does: real mouse and keyboard events at the
screen positions of slots and widgets (read from the page), no internal calls
for the edits themselves."""
from __future__ import annotations

import json
import time
from typing import Any

_SCREEN_OF = """([x, y]) => {
  const app = window.loomApp; const c = app.canvas.convertOffsetToCanvas([x, y]);
  const el = app.canvasEl; const r = el.getBoundingClientRect();
  return [r.left + c[0] * r.width / el.width, r.top + c[1] * r.height / el.height];
}"""


def screen_of(page: Any, x: float, y: float) -> tuple[float, float]:
    """Screen position of a graph-space point."""
    return tuple(page.evaluate(_SCREEN_OF, [x, y]))


def slot_xy(page: Any, node_id: int, is_input: bool, slot: int) -> tuple[float, float]:
    """Screen position of a node's input or output slot."""
    x, y = page.evaluate(
        "([id, inp, s]) => window.loomApp.graph.getNodeById(id).getConnectionPos(inp, s)",
        [node_id, is_input, slot])
    return screen_of(page, x, y)


def widget_xy(page: Any, node_id: int, name: str, dx: float = 0.5) -> tuple[float, float]:
    """Screen position inside a widget (dx: fraction of the node's width)."""
    x, y = page.evaluate("""([id, name, dx]) => {
      window.loomApp.canvas.draw(true, true);  // widgets get their positions when drawn
      const n = window.loomApp.graph.getNodeById(id);
      const w = n.widgets.find((w) => w.name === name);
      return [n.pos[0] + n.size[0] * dx, n.pos[1] + (w.last_y ?? w.y) + 10];
    }""", [node_id, name, dx])
    return screen_of(page, x, y)


def node_ids(page: Any) -> list[int]:
    return page.evaluate("() => window.loomApp.graph._nodes.map((n) => n.id)")


def add_node_by_search(page: Any, query: str, at: tuple[float, float], expect_type: str) -> int:
    """Double-click empty canvas at `at`, search, press Enter; returns the new node's id."""
    before = set(node_ids(page))
    page.mouse.dblclick(*at)
    box = page.wait_for_selector(".loom-search input")
    box.fill(query)
    page.wait_for_selector(f".loom-search li.selected[data-type='{expect_type}']", timeout=5000)
    page.keyboard.press("Enter")
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=len(before) + 1)
    (new,) = set(node_ids(page)) - before
    return new


def drag(page: Any, a: tuple[float, float], b: tuple[float, float], steps: int = 8) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def connect(page: Any, src: int, out_slot: int, dst: int, in_slot: int) -> None:
    """Drag a link from an output slot to an input slot."""
    drag(page, slot_xy(page, src, False, out_slot), slot_xy(page, dst, True, in_slot))


def input_link(page: Any, node_id: int, slot: int) -> Any:
    return page.evaluate("([id, s]) => window.loomApp.graph.getNodeById(id).inputs[s].link", [node_id, slot])


def set_number(page: Any, node_id: int, name: str, value: float) -> None:
    """Click a number widget's middle, type the value in litegraph's prompt, press Enter."""
    page.mouse.click(*widget_xy(page, node_id, name))
    field = page.wait_for_selector(".graphdialog input", timeout=5000)
    field.fill(str(value))
    field.press("Enter")
    page.wait_for_function(
        "([id, name, v]) => window.loomApp.graph.getNodeById(id).widgets.find((w) => w.name === name).value === v",
        arg=[node_id, name, value], timeout=5000)


def set_text(page: Any, node_id: int, name: str, text: str) -> None:
    """Click a multi-line text widget, type into its editor, leave it."""
    page.mouse.click(*widget_xy(page, node_id, name))
    area = page.wait_for_selector("textarea.loom-textedit", timeout=5000)
    area.fill(text)
    page.keyboard.press("Tab")
    page.wait_for_selector("textarea.loom-textedit", state="detached", timeout=5000)


def widget_value(page: Any, node_id: int, name: str) -> Any:
    return page.evaluate(
        "([id, name]) => window.loomApp.graph.getNodeById(id).widgets.find((w) => w.name === name).value",
        [node_id, name])


def drop_file(page: Any, name: str, mime: str, data: bytes) -> None:
    """Drop a file on the canvas through a real DataTransfer."""
    page.evaluate("""([name, mime, bytes]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
      const el = document.getElementById('graph-canvas');
      const r = el.getBoundingClientRect();
      const opts = { dataTransfer: dt, bubbles: true, cancelable: true, clientX: r.left + 200, clientY: r.top + 200 };
      el.dispatchEvent(new DragEvent('dragover', opts));
      el.dispatchEvent(new DragEvent('drop', opts));
    }""", [name, mime, list(data)])


def load_workflow(page: Any, doc: dict) -> None:
    """Load a workflow by dropping it as a JSON file."""
    drop_file(page, "workflow.json", "application/json", json.dumps(doc).encode())
    page.wait_for_function("(n) => window.loomApp.graph._nodes.length === n", arg=len(doc["nodes"]))


def wait_for(page: Any, js: str, arg: Any = None, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(js, arg)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {js}")


def set_combo(page: Any, node_id: int, name: str, value: str) -> None:
    """Click a combo widget and pick `value` from litegraph's menu."""
    page.mouse.click(*widget_xy(page, node_id, name))
    page.click(f".litecontextmenu .litemenu-entry:text-is('{value}')")
    page.wait_for_function(
        "([id, name, v]) => window.loomApp.graph.getNodeById(id).widgets.find((w) => w.name === name).value === v",
        arg=[node_id, name, value], timeout=5000)


def title_xy(page: Any, node_id: int) -> tuple[float, float]:
    """Screen position on a node's title bar."""
    x, y = page.evaluate(
        "(id) => { const n = window.loomApp.graph.getNodeById(id); return [n.pos[0] + 40, n.pos[1] - 15]; }", node_id)
    return screen_of(page, x, y)


def canvas_point(page: Any, fx: float, fy: float) -> tuple[float, float]:
    """Screen position at fractions of the canvas's width and height."""
    r = page.eval_on_selector("#graph-canvas", "el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }")
    return (r[0] + r[2] * fx, r[1] + r[3] * fy)


def saved_image_loaded(page: Any, node_id: int, timeout: float = 300) -> str:
    """Wait until a node shows a loaded output image; returns its URL."""
    return wait_for(page, """(id) => { const n = window.loomApp.graph.getNodeById(id);
        return n.imgs && n.imgs.length && n.imgs[0].complete && n.imgs[0].naturalWidth > 0 && n.imgs[0].src; }""",
                    node_id, timeout=timeout)
