"""ComfyUI's official frontend (`--front-end comfyui`, the optional comfyui-frontend-package) in headless
Chromium against a real Loom server with a tiny SD1.5 checkpoint.

A first visit loads with no console error and no failed request (every request it makes is answered, none
leaves the machine) and shows the workflow templates; a returning user's default graph is Loom's
text-to-image graph on the installed checkpoint, and queuing it shows progress and the output image.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from server.comfy_frontend import comfyui_frontend_root
from server.routes_frontend import template_file
from tests.web.conftest import start_server

pytestmark = pytest.mark.slow

APP_READY = "() => window.app && window.app.graph && window.LiteGraph && window.app.api"


@pytest.fixture(autouse=True)
def _frontend_installed() -> None:
    if comfyui_frontend_root() is None:
        pytest.skip("comfyui-frontend-package is not installed (pip install -r requirements-frontend.txt)")
    if template_file("index.json") is None:
        pytest.skip("comfyui-workflow-templates is not installed (pip install -r requirements-frontend.txt)")


class Traffic:
    """What the page did: console errors, requests that got no answer or an error status, foreign hosts."""

    def __init__(self, page: Any, origin: str) -> None:
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.foreign: list[str] = []
        self.answered: set[int] = set()
        self.statuses: dict[str, int] = {}
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: None if r.url.startswith((origin, "blob:", "data:")) else self.foreign.append(r.url))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _response(self, response: Any) -> None:
        self.answered.add(id(response.request))
        self.statuses[response.url] = response.status
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")

    def _failed(self, request: Any) -> None:
        # Chromium reports a request whose answer the page never read as "aborted"; only a request that got
        # no answer at all failed.
        if id(request) not in self.answered:
            self.failed.append(f"{request.failure} {request.method} {request.url}")


def _open(browser: Any, url: str) -> tuple[Any, Any, Traffic]:
    context = browser.new_context(viewport={"width": 1400, "height": 850})
    page = context.new_page()
    traffic = Traffic(page, url.rstrip("/"))
    page.goto(url, timeout=120_000)
    page.wait_for_function(APP_READY, timeout=120_000)
    page.wait_for_load_state("networkidle", timeout=60_000)
    return context, page, traffic


def test_first_visit_is_clean_and_shows_templates(browser: Any, tmp_path: Path) -> None:
    with start_server(tmp_path, ("--front-end", "comfyui")) as url:
        context, page, traffic = _open(browser, url)
        try:
            page.wait_for_timeout(2000)
            assert traffic.errors == [], traffic.errors
            assert traffic.failed == [], traffic.failed
            assert traffic.foreign == [], f"requests left the machine: {traffic.foreign}"
            assert traffic.statuses.get(url + "templates/index.json") == 200
            thumbnails = [u for u, s in traffic.statuses.items() if "/templates/" in u and u.endswith(".webp")]
            assert thumbnails and all(traffic.statuses[u] == 200 for u in thumbnails)
            settings = json.loads((tmp_path / "user" / "default" / "comfy.settings.json").read_text())
            assert settings["Comfy.InstalledVersion"], "the frontend saved its settings through Loom"
        finally:
            context.close()


QUEUE_SMALL = """async () => {
    const graph = window.app.graph;
    const byType = (t) => graph.nodes.find((n) => n.type === t);
    byType('EmptyLatentImage').widgets.find((w) => w.name === 'width').value = 64;
    byType('EmptyLatentImage').widgets.find((w) => w.name === 'height').value = 64;
    byType('KSampler').widgets.find((w) => w.name === 'steps').value = 3;
    window.seen = [];
    for (const name of ['execution_start', 'executing', 'progress', 'executed', 'execution_success',
                        'execution_error', 'b_preview', 'b_preview_with_metadata', 'progress_state']) {
        window.app.api.addEventListener(name, (e) => window.seen.push([name, e.detail?.node ?? null]));
    }
    return await window.app.queuePrompt(0, 1);
}"""

OUTPUT_SHOWN = "() => (window.app.nodeOutputs?.['9']?.images?.length ?? 0) > 0"

# The frontend draws the output on the SaveImage node from /view: load that URL as the page would.
OUTPUT_IMAGE = """async () => {
    const image = window.app.nodeOutputs['9'].images[0];
    const params = new URLSearchParams({filename: image.filename, subfolder: image.subfolder, type: image.type});
    const element = new Image();
    element.src = window.app.api.apiURL('/view?' + params.toString());
    await element.decode();
    return [image.type, element.naturalWidth, element.naturalHeight];
}"""


def test_default_graph_is_loom_text_to_image_and_runs(browser: Any, tmp_path: Path) -> None:
    user = tmp_path / "user" / "default"
    user.mkdir(parents=True)
    (user / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    with start_server(tmp_path, ("--front-end", "comfyui")) as url:
        context, page, traffic = _open(browser, url)
        try:
            page.wait_for_function("() => window.app.graph.nodes.some((n) => n.type === 'KSampler')",
                                   timeout=60_000)
            types = sorted(page.evaluate("() => window.app.graph.nodes.map((n) => n.type)"))
            assert types == sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage",
                                    "KSampler", "VAEDecode", "SaveImage"])
            ckpt = page.evaluate("() => window.app.graph.nodes.find((n) => n.type === 'CheckpointLoaderSimple')"
                                 ".widgets[0].value")
            assert ckpt == "tiny_sd15.safetensors"
            assert page.evaluate(QUEUE_SMALL)
            page.wait_for_function(OUTPUT_SHOWN, timeout=120_000)
            assert page.evaluate(OUTPUT_IMAGE) == ["output", 64, 64]
            assert (tmp_path / "output" / "ComfyUI_00001_.png").is_file()
            seen = page.evaluate("() => window.seen")
            names = [name for name, _ in seen]
            assert "execution_start" in names and "execution_success" in names, names
            assert ["progress", "3"] in [list(s) for s in seen], seen
            assert ["executed", "9"] in [list(s) for s in seen], seen
            assert "progress_state" in names, "per-node progress for the frontend's node highlight and bars"
            assert "b_preview_with_metadata" in names or "b_preview" in names, "live previews reach the frontend"

            # The side panels a user opens next: assets, models, workflows, nodes, the job list.
            for label in ("Assets (a)", "Model Library (m)", "Workflows (w)", "Node Library (n)", "View all jobs"):
                button = page.query_selector(f"[aria-label='{label}']")
                if button is not None and button.is_visible():
                    button.click()
                    page.wait_for_load_state("networkidle", timeout=30_000)
            time.sleep(0.5)
            assert traffic.errors == [], traffic.errors
            assert traffic.failed == [], traffic.failed
            assert traffic.foreign == [], traffic.foreign
        finally:
            context.close()


INVALID_AND_FAILING = """async () => {
    const graph = window.app.graph;
    const ckpt = graph.nodes.find((n) => n.type === 'CheckpointLoaderSimple');
    ckpt.widgets[0].value = 'no_such_model.safetensors';
    try { await window.app.queuePrompt(0, 1); } catch (e) { /* the frontend reports it itself */ }
    return JSON.parse(JSON.stringify(window.app.lastNodeErrors ?? null));
}"""


def test_errors_land_on_the_right_node(browser: Any, tmp_path: Path) -> None:
    user = tmp_path / "user" / "default"
    user.mkdir(parents=True)
    (user / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    with start_server(tmp_path, ("--front-end", "comfyui")) as url:
        context, page, traffic = _open(browser, url)
        try:
            page.wait_for_function("() => window.app.graph.nodes.some((n) => n.type === 'KSampler')",
                                   timeout=60_000)
            errors = page.evaluate(INVALID_AND_FAILING)
            assert errors and list(errors) == ["4"], errors
            assert errors["4"]["class_type"] == "CheckpointLoaderSimple"
            assert errors["4"]["errors"][0]["type"] == "value_not_in_list"
            assert page.evaluate("() => window.app.graph.getNodeById(4).has_errors") is True
            # The rejected prompt is a 400 the frontend expects, answered: nothing else failed.
            assert [f for f in traffic.failed if "/api/prompt" not in f] == []
        finally:
            context.close()
