"""Loom's built-in node library, the typed node declaration (`spec.py`) and the registry.

`MAX_RESOLUTION` is here because ComfyUI custom nodes read `nodes.MAX_RESOLUTION`.
"""

MAX_RESOLUTION = 16384
