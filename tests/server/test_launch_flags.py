"""`--auto-launch` and `--dont-print-server` (issue 13): the start-up banner and the browser
opened once the server listens, through `on_listening` and through a real `python main.py`."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from config import parse_args
from server.app import editor_url, on_listening
from server.keys import ServerSettings

REPO = Path(__file__).resolve().parents[2]
MESSAGE = "======== Running on http://127.0.0.1:8190 ========"


def _settings(*flags: str) -> ServerSettings:
    return ServerSettings.from_config(parse_args(list(flags), {}))


def test_banner_printed_and_no_browser_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    opened: list[str] = []
    assert on_listening(MESSAGE, _settings("--port", "8190"), opened.append) is None
    assert "Loom is serving on http://127.0.0.1:8190" in capsys.readouterr().out and opened == []


def test_dont_print_server_prints_nothing_and_auto_launch_opens_the_editor(capsys: pytest.CaptureFixture[str]) -> None:
    opened: list[str] = []
    thread = on_listening(MESSAGE, _settings("--port", "8190", "--dont-print-server", "--auto-launch"), opened.append)
    assert thread is not None
    thread.join(10)
    assert capsys.readouterr().out == "" and opened == ["http://127.0.0.1:8190"]
    assert on_listening(MESSAGE, _settings("--auto-launch", "--disable-auto-launch", "--dont-print-server"),
                        opened.append) is None


def test_editor_url_for_wildcard_and_ipv6_listens() -> None:
    assert editor_url(_settings("--listen", "--port", "9001")) == "http://127.0.0.1:9001"
    assert editor_url(_settings("--listen", "::1", "--port", "9001")) == "http://[::1]:9001"
    assert editor_url(_settings("--listen", "10.1.2.3,127.0.0.1")) == "http://10.1.2.3:8188"


def test_cache_classic_is_warned_as_ignored() -> None:
    assert any("--cache-classic" in w for w in parse_args(["--cache-classic"], {}).warnings)
    assert not parse_args([], {}).warnings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_main_auto_launch_opens_the_browser_once_listening_and_prints_no_banner(tmp_path: Path) -> None:
    """A real `python main.py --auto-launch --dont-print-server`; the browser is the command in
    $BROWSER (Python's webbrowser honours it), a script that writes the URL it was given."""
    port = _free_port()
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys\nopen({str(opened)!r}, 'a').write(sys.argv[1] + '\\n')\n")
    env = {**os.environ, "BROWSER": f"{sys.executable} {browser} %s"}
    log = tmp_path / "main.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "main.py", "--base-directory", str(tmp_path), "--port", str(port),
                                 "--auto-launch", "--dont-print-server", "--disable-all-custom-nodes"],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (opened.exists() and opened.read_text().endswith("\n")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the browser was never opened"
            time.sleep(0.05)
        assert opened.read_text() == f"http://127.0.0.1:{port}\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/queue", timeout=10) as r:
            assert r.status == 200  # it listened before the browser was sent there
    finally:
        proc.terminate()
        proc.wait(20)
    assert "Loom is serving on" not in log.read_text()
