"""Loom's HTTP and websocket server (aiohttp): ComfyUI's REST API, the websocket hub, files.

Importing this package has no side effects; `server.app.create_app(runtime)` builds the
application and `server.app.serve(runtime)` runs it.
"""


def __getattr__(name: str) -> object:
    """`server.PromptServer` for ComfyUI custom node packs, imported only when asked for."""
    if name == "PromptServer":
        from compat.prompt_server import PromptServer  # light: no aiohttp app is built for it
        return PromptServer
    raise AttributeError(f"module 'server' has no attribute {name!r}")
