"""Loom's HTTP and websocket server (aiohttp): ComfyUI's REST API, the websocket hub, files.

Importing this package has no side effects; `server.app.create_app(runtime)` builds the
application and `server.app.serve(runtime)` runs it.
"""


def __getattr__(name: str) -> object:
    """`server.PromptServer` for ComfyUI custom node packs, imported only when asked for."""
    if name == "PromptServer":
        from server.prompt_server_compat import PromptServer
        return PromptServer
    raise AttributeError(f"module 'server' has no attribute {name!r}")
