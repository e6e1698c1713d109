"""The editor on servers it does not share with other tests: one started with
`--auth-token` (the page opened with `?token=` loads its bundle, reads
/object_info with the Bearer header, connects the websocket and shows output
images with the token on /view URLs), and one that restarts under the page
(the websocket reconnects by itself)."""
from __future__ import annotations

import pytest

from tests.web import editor_page as ui
from tests.web.conftest import ARTIFACTS, _free_port, _prerequisites, start_server

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"


def test_editor_works_with_an_auth_token(browser, tmp_path):
    _prerequisites()
    with start_server(tmp_path, ("--auth-token", TOKEN)) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 850})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}?token={TOKEN}")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.wait_for_selector("#connection.ok", timeout=15_000)
        assert page.evaluate("() => Object.keys(window.loomApp.defs).length") > 0
        page.click("#clear-button")
        empty = ui.add_node_by_search(page, "empty image", ui.canvas_point(page, 0.1, 0.2), "EmptyImage")
        save = ui.add_node_by_search(page, "save image", ui.canvas_point(page, 0.5, 0.2), "SaveImage")
        ui.connect(page, empty, 0, save, 0)
        ui.set_number(page, empty, "width", 16)
        ui.set_number(page, empty, "height", 16)
        page.click("#queue-button")
        src = ui.saved_image_loaded(page, save, timeout=120)
        assert f"token={TOKEN}" in src
        page.screenshot(path=str(ARTIFACTS / "13_auth_token.png"))
        assert errors == []
        # Without the token the page's own files load (extension imports cannot carry a token) but the API refuses.
        bare = context.new_page()
        response = bare.goto(url)
        assert response.status == 200
        assert bare.request.get(f"{url}api/object_info").status == 401
        assert bare.request.get(f"{url}api/queue").status == 401
        context.close()


def test_websocket_reconnects_after_a_server_restart(browser, tmp_path):
    _prerequisites()
    port = _free_port()
    context = browser.new_context(viewport={"width": 1400, "height": 850})
    page = context.new_page()
    with start_server(tmp_path, port=port) as url:
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.wait_for_selector("#connection.ok", timeout=15_000)
    page.wait_for_selector("#connection.bad", timeout=15_000)
    with start_server(tmp_path, port=port):
        page.wait_for_selector("#connection.ok", timeout=60_000)
        page.wait_for_selector(".loom-toast:text('Reconnected to the server')", timeout=5000)
        page.screenshot(path=str(ARTIFACTS / "17_reconnected.png"))
        # The page still talks to the new server.
        assert page.evaluate("() => window.loomApp.api.getQueue().then((q) => Array.isArray(q.queue_pending))")
    context.close()
