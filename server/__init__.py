"""Loom's HTTP and websocket server (aiohttp): ComfyUI's REST API, the websocket hub, files.

Importing this package has no side effects; `server.app.create_app(runtime)` builds the
application and `server.app.serve(runtime)` runs it.
"""
