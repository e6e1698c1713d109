"""Loom's example custom node pack, written with Loom's typed node API (see docs/custom-nodes.md).

A pack lists its nodes in `NODES` (Loom `Node` subclasses) and may name a folder of editor
scripts in `WEB_DIRECTORY`. The nodes live in a sibling module, imported relatively: every pack
is imported as its own package, so this works without touching `sys.path`.
"""
from __future__ import annotations

from .example_nodes import NODES

WEB_DIRECTORY = "web"

__all__ = ["NODES", "WEB_DIRECTORY"]
