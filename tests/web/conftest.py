"""Fixtures for the browser tests: a real Loom server with a tiny checkpoint, and
Debian's headless Chromium driven by Playwright (no browser is downloaded)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Loom server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                if res.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Loom server did not answer {url} within {timeout:.0f} s")


SD_NODES = ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage")


def _require_sd_nodes(url: str) -> None:
    with urllib.request.urlopen(url + "api/object_info", timeout=30) as res:
        offered = json.load(res)
    missing = [n for n in SD_NODES if n not in offered]
    if missing:
        pytest.skip(f"the Loom server does not offer {', '.join(missing)} yet")


def _prerequisites(need_server: bool = True) -> None:
    server_files = (REPO / "server" / "app.py", REPO / "main.py")
    if need_server and not all(f.is_file() for f in server_files):
        pytest.skip("the Loom server (server/app.py, main.py) is not in this checkout yet")
    if not (REPO / "web" / "dist" / "index.html").is_file():
        pytest.skip("web/dist is not built: run `npm install && npm run build` in web/")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@dataclass(frozen=True)
class LoomServer:
    """A running server: its URL and base directory (None for an external server)."""
    url: str
    base: Path | None


@pytest.fixture(scope="session")
def loom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoomServer]:
    """Start `python main.py` on a free loopback port with a tiny SD1.5 checkpoint.

    LOOM_WEB_TEST_URL points the tests at an already running server instead."""
    if os.environ.get("LOOM_WEB_TEST_URL"):
        _prerequisites(need_server=False)
        yield LoomServer(os.environ["LOOM_WEB_TEST_URL"], None)
        return
    _prerequisites()
    base = tmp_path_factory.mktemp("loom-base")
    with start_server(base) as url:
        yield LoomServer(url, base)


@contextmanager
def start_server(base: Path, extra_args: tuple[str, ...] = (), port: int | None = None) -> Iterator[str]:
    """Run `python main.py` on a free port with `base` as base directory (a tiny SD1.5
    checkpoint is written there first); yields the URL; stops the server after."""
    from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint

    ckpts = base / "models" / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    if not (ckpts / "tiny_sd15.safetensors").exists():
        write_tiny_checkpoint(ckpts / "tiny_sd15.safetensors", family="sd15")
    port = port or _free_port()
    log_path = base / f"server-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port), "--base-directory", str(base), "--cpu",
         "--preview-method", "latent2rgb", *extra_args],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    token = dict(zip(extra_args, extra_args[1:])).get("--auth-token")
    probe = url + "api/object_info" + (f"?token={token}" if token else "")
    try:
        _wait_http(probe, proc, timeout=180)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / log_path.name).write_text(log_path.read_text())


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through Playwright's executable_path."""
    _prerequisites(need_server=not os.environ.get("LOOM_WEB_TEST_URL"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def loom_url(loom_server: LoomServer) -> str:
    return loom_server.url


@pytest.fixture()
def page(basic_page, loom_url: str) -> object:
    """`basic_page` on a server that offers the Stable Diffusion nodes (else the test skips)."""
    _require_sd_nodes(loom_url)
    return basic_page


@pytest.fixture()
def basic_page(browser, loom_url: str) -> Iterator[object]:
    """A fresh page (empty localStorage) with the editor loaded; console errors are collected."""
    context = browser.new_context(viewport={"width": 1400, "height": 850})
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    pg.goto(loom_url)
    pg.wait_for_selector("body[data-ready=true]", timeout=30_000)
    pg.wait_for_selector("#connection.ok", timeout=15_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield pg
    context.close()
