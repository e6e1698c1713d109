"""A real Loom server on a loopback port for the server tests, with a test node registry.

The registry holds the built-in nodes plus two test nodes: `SlowSteps` (reports progress over
N steps, sleeping between them, checks the interrupt flag at each step, sends a preview) and
`SaveTestImage` (writes a small PNG under output/ and reports it as ComfyUI's SaveImage does).
"""
from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
from aiohttp import web
from PIL import Image

from config import Config
from runtime import Runtime, assemble_runtime
from executor.run import Executor
from folders import Folders
from nodes.context import InterruptFlag, current
from nodes.registry import build_builtin_registry
from nodes.spec import Boolean, Float, Int, Node, NodeOutput, Output, String
from server.app import create_app
from server.keys import WORKER, ServerSettings

T = TypeVar("T")


class SlowSteps(Node):
    """Counts `steps` steps of `delay` seconds each, reporting progress; returns `text`."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = (Int("steps", 5, min=1, max=10000), Float("delay", 0.01, min=0.0, max=10.0), String("text", ""),
              Boolean("busy", False, optional=True), Boolean("previews", False, optional=True))
    OUTPUTS = (Output("STRING"),)

    def execute(self, steps: int, delay: float, text: str, busy: bool = False, previews: bool = False) -> NodeOutput:
        """`busy` spins in Python instead of sleeping: it holds the GIL like a pure-Python loop;
        `previews` sends a preview at every step (else only at the first)."""
        ctx = current()
        preview = Image.new("RGB", (8, 8), (255, 0, 0))
        for i in range(steps):
            if busy:
                end = time.perf_counter() + delay
                while time.perf_counter() < end:
                    pass
            else:
                time.sleep(delay)
            ctx.progress(i + 1, steps, preview if i == 0 or previews else None)
        return NodeOutput(values=(text,), ui={"text": [text]})


class SaveTestImage(Node):
    """Writes an 8x8 PNG named `name` under output/ (ComfyUI's `images` ui entry)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = (String("name", "test.png"), Int("shade", 128, min=0, max=255))
    OUTPUTS = ()

    def execute(self, name: str, shade: int) -> NodeOutput:
        ctx = current()
        out = Path(ctx.folders.output_directory)
        out.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (8, 8), (shade, 0, 0, 200)).save(out / name)
        return NodeOutput(values=(), ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class SaveNumberedImage(Node):
    """Writes `<prefix>_<n>.png` under output/ with the next free n (as SaveImage counts), so a
    second run of the same prompt writes a second file. Like SaveImage it has no outputs."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = (String("prefix", "numbered"),)
    OUTPUTS = ()

    def execute(self, prefix: str) -> NodeOutput:
        out = Path(current().folders.output_directory)
        out.mkdir(parents=True, exist_ok=True)
        n = len(list(out.glob(f"{prefix}_*.png")))
        name = f"{prefix}_{n:05d}.png"
        Image.new("RGB", (8, 8), (n % 256, 0, 0)).save(out / name)
        return NodeOutput(values=(), ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class WaitWhileFileExists(Node):
    """Blocks while the file `marker` exists (after its input is ready): a deterministic window
    in which a test can kill the process after an earlier node wrote its output."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = (String("after", ""), String("marker", ""))
    OUTPUTS = (Output("STRING"),)

    def execute(self, after: str, marker: str) -> NodeOutput:
        while marker and Path(marker).exists():
            time.sleep(0.02)
        return NodeOutput(values=(after,), ui={"text": [after]})


def build_test_runtime(base: Path, config: Config | None = None) -> Runtime:
    """A runtime like `runtime.build_runtime` makes, on folders under `base` (no model manager)."""
    folders = Folders.for_base(base)
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    registry = build_builtin_registry()
    registry.register(SlowSteps, pack="tests")
    registry.register(SaveTestImage, pack="tests")
    interrupt = InterruptFlag()
    executor = Executor(registry, folders=folders, interrupt=interrupt)
    return assemble_runtime(registry, folders, config=config, executor=executor)


def no_worker(app: web.Application) -> None:
    """A setup hook for LiveServer: the worker is stopped before it starts, so stored prompts stay queued
    (stopping it after start-up races with it taking the first one)."""
    app[WORKER].stop()


class LiveServer:
    """`async with LiveServer(runtime) as srv`: the app on 127.0.0.1:<free port>, `srv.url`,
    `srv.session` (an aiohttp ClientSession), `srv.app`."""

    def __init__(self, runtime: Any, hooks: tuple = (), **settings: Any) -> None:
        self.runtime = runtime
        self.hooks = hooks
        self.settings = ServerSettings(**settings)
        self.app: web.Application | None = None
        self.url = ""

    async def __aenter__(self) -> "LiveServer":
        self.app = create_app(self.runtime, settings=self.settings, setup_hooks=self.hooks)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.runner.cleanup()

    async def post_prompt(self, prompt: dict[str, Any], **fields: Any) -> dict[str, Any]:
        async with self.session.post(self.url + "/prompt", json={"prompt": prompt, **fields}) as r:
            body = await r.json()
            assert r.status == 200, body
            return body

    async def wait_running(self, prompt_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.session.get(f"{self.url}/queue") as r:
                if prompt_id in [e[1] for e in (await r.json())["queue_running"]]:
                    return
            await asyncio.sleep(0.01)
        raise AssertionError(f"prompt {prompt_id} did not start in {timeout} s")

    async def wait_history(self, prompt_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.session.get(f"{self.url}/history/{prompt_id}") as r:
                body = await r.json()
            if prompt_id in body:
                return body[prompt_id]
            await asyncio.sleep(0.02)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
    """Run an async test body on a fresh event loop with an overall timeout."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)
    return asyncio.run(bounded())


def png_bytes(size: tuple[int, int] = (4, 4), color: tuple[int, ...] = (0, 255, 0, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def slow_prompt(steps: int = 5, delay: float = 0.01, text: str = "x", busy: bool = False,
                previews: bool = False) -> dict[str, Any]:
    return {"1": {"class_type": "SlowSteps", "inputs": {"steps": steps, "delay": delay, "text": text, "busy": busy,
                                                        "previews": previews}}}


def concat_prompt(a: str, b: str) -> dict[str, Any]:
    return {"1": {"class_type": "PrimitiveString", "inputs": {"value": a}},
            "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": b, "delimiter": "-"}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
