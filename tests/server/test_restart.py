"""A real `python main.py`-style process: start-up time, and `kill -9` in the middle of a run
followed by a restart — pending prompts run, the interrupted one runs again, history is kept.
Marked slow: each start imports torch in a fresh process (seconds on a busy machine)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).resolve().parent / "serve_slow.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], base: Path, log_name: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(base / log_name, "wb")
    proc = subprocess.Popen([sys.executable, *args, "--base-directory", str(base), "--port", str(port)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait_up(proc: subprocess.Popen, url: str, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert proc.poll() is None, "the server exited"
        try:
            _get(url + "/queue", timeout=1)
            return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.02)
    raise AssertionError("the server did not answer")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_history(url: str, pid: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = _get(f"{url}/history/{pid}")
        if pid in entry:
            return entry[pid]
        time.sleep(0.05)
    raise AssertionError(f"{pid} never finished")


@pytest.mark.slow
def test_main_starts_and_answers_quickly(tmp_path: Path) -> None:
    """Start-up to first answer, no model loaded (figure in bench/RESULTS.md; bound generous)."""
    proc, url = _start(["main.py"], tmp_path, "main.log")
    try:
        elapsed = _wait_up(proc, url)
        assert elapsed < 60, elapsed
        assert "PrimitiveString" in _get(url + "/object_info")
        with urllib.request.urlopen(url + "/", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    finally:
        _stop(proc)
    assert proc.returncode is not None


def _concat(text: str) -> dict[str, Any]:
    return {"1": {"class_type": "PrimitiveString", "inputs": {"value": text}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_loses_nothing(tmp_path: Path) -> None:
    proc, url = _start([str(LAUNCHER)], tmp_path, "first.log")
    try:
        _wait_up(proc, url)
        done = _post(url + "/prompt", {"prompt": _concat("before")})["prompt_id"]
        _wait_history(url, done)
        slow = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 40, "delay": 0.05, "text": "slow"}}}
        running = _post(url + "/prompt", {"prompt": slow, "prompt_id": "the-slow-one"})["prompt_id"]
        pending = [_post(url + "/prompt", {"prompt": _concat(f"after{i}")})["prompt_id"] for i in range(3)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if [e[1] for e in _get(url + "/queue")["queue_running"]] == [running]:
                break
            time.sleep(0.02)
        time.sleep(0.3)  # in the middle of the slow node
        assert [e[1] for e in _get(url + "/queue")["queue_running"]] == [running]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc2, url2 = _start([str(LAUNCHER)], tmp_path, "second.log")
    try:
        _wait_up(proc2, url2)
        assert _get(f"{url2}/history/{done}")[done]["outputs"]["2"]["text"] == ["before"]
        queue = _get(url2 + "/queue")
        queued = [e[1] for e in queue["queue_running"] + queue["queue_pending"]]
        history = _get(url2 + "/history")
        assert set(queued) | (set(history) - {done}) == {running, *pending}
        assert queued and queued[0] == running or running in history, "the interrupted prompt runs first"
        for pid in [running, *pending]:
            entry = _wait_history(url2, pid)
            assert entry["status"]["status_str"] == "success", entry["status"]
        assert _get(f"{url2}/history/{running}")[running]["outputs"]["1"]["text"] == ["slow"]
        order = list(_get(url2 + "/history"))
        assert order == [done, running, *pending]
    finally:
        _stop(proc2)


@pytest.mark.slow
def test_kill_9_after_save_before_done_writes_no_second_set(tmp_path: Path) -> None:
    """kill -9 while an output node run after the saver blocks: the re-run reuses the written
    output. (Independent output nodes run last-listed first: "2" saves, then "1" waits.)"""
    marker = tmp_path / "hold"
    marker.write_text("held")
    prompt = {"1": {"class_type": "WaitWhileFileExists", "inputs": {"after": "x", "marker": str(marker)}},
              "2": {"class_type": "SaveNumberedImage", "inputs": {"prefix": "crash"}}}
    output = tmp_path / "output"
    proc, url = _start([str(LAUNCHER)], tmp_path, "first.log")
    try:
        _wait_up(proc, url)
        pid = _post(url + "/prompt", {"prompt": prompt, "prompt_id": "saves-then-waits"})["prompt_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(output.glob("crash_*.png")):
            time.sleep(0.02)
        assert list(output.glob("crash_*.png")), "the saver did not run first"
        time.sleep(0.5)  # node 1 is blocked on the marker: the prompt is not done
        assert [e[1] for e in _get(url + "/queue")["queue_running"]] == [pid]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    marker.unlink()
    proc2, url2 = _start([str(LAUNCHER)], tmp_path, "second.log")
    try:
        _wait_up(proc2, url2)
        entry = _wait_history(url2, pid)
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert sorted(p.name for p in output.glob("crash_*.png")) == ["crash_00000.png"]
        assert entry["outputs"]["2"]["images"][0]["filename"] == "crash_00000.png"
        assert entry["outputs"]["1"]["text"] == ["x"]
        assert list(_get(url2 + "/history")) == [pid]
    finally:
        _stop(proc2)
