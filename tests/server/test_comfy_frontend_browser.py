"""ComfyUI's official frontend (the optional `comfyui-frontend-package`) in headless Chromium
against a real Loom server: it loads Loom's node definitions and runs a prompt it built."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from server.comfy_frontend import comfyui_frontend_root

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).resolve().parent / "serve_slow.py"
CHROMIUM = Path("/usr/bin/chromium")

BUILD_AND_QUEUE = """async () => {
    const graph = window.app.graph;
    graph.clear();
    const text = window.LiteGraph.createNode('PrimitiveString');
    graph.add(text);
    text.widgets[0].value = 'from-comfy-frontend';
    const show = window.LiteGraph.createNode('PreviewAny');
    graph.add(show);
    text.connect(0, show, 0);
    return await window.app.queuePrompt(0, 1);
}"""


@pytest.mark.slow
def test_comfyui_frontend_loads_loom_nodes_and_runs_a_prompt(tmp_path: Path) -> None:
    if comfyui_frontend_root() is None:
        pytest.skip("comfyui-frontend-package is not installed (optional dependency)")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, str(LAUNCHER), "--base-directory", str(tmp_path), "--port", str(port),
                             "--front-end", "comfyui"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                urllib.request.urlopen(url + "/queue", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url + "/", timeout=120_000)
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph && "
                                   "'SlowSteps' in window.LiteGraph.registered_node_types", timeout=120_000)
            assert page.evaluate(BUILD_AND_QUEUE)
            browser.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            history = json.loads(urllib.request.urlopen(url + "/history", timeout=5).read())
            if history:
                break
            time.sleep(0.2)
        entry = next(iter(history.values()))
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["2"]["text"] == ["from-comfy-frontend"]
        assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"], "the frontend sent its workflow"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
