"""`ComfyExtension` and the running of a pack's `comfy_entrypoint()`.

A schema-API pack defines `comfy_entrypoint()` (usually `async`) returning a `ComfyExtension`
whose `on_load()` and `get_node_list()` (also usually `async`) give its `io.ComfyNode`
classes (ComfyUI's `comfy_api/latest/__init__.py` and `nodes.py` `load_custom_node`). Loom
runs these coroutines to completion at start-up, on a private event loop.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable


class ComfyExtension:
    """Base class of a schema-API pack's extension object."""

    async def on_load(self) -> None:
        """Called once when the pack is loaded, before `get_node_list()`."""

    async def get_node_list(self) -> list[type]:
        """The pack's `io.ComfyNode` classes."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_node_list()")


def resolve(value: Any) -> Any:
    """`value`, or what it gives when it is awaitable (run on a private event loop; on a
    helper thread when this thread already runs a loop)."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(wait())
        except BaseException as error:  # handed back to the calling thread below
            box["error"] = error

    worker = threading.Thread(target=run, name="loom-entrypoint")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def node_classes(entrypoint: Callable[[], Any]) -> list[type]:
    """Call a pack's `comfy_entrypoint`, load the extension and return its node classes."""
    extension = resolve(entrypoint())
    if not callable(getattr(extension, "get_node_list", None)):
        raise TypeError(f"comfy_entrypoint() returned {type(extension).__name__}, which has no get_node_list()")
    on_load = getattr(extension, "on_load", None)
    if callable(on_load):
        resolve(on_load())
    nodes = resolve(extension.get_node_list())
    if not isinstance(nodes, (list, tuple)):
        raise TypeError(f"get_node_list() returned {type(nodes).__name__}, expected a list of node classes")
    return list(nodes)
