"""Test pack in Loom's typed API: nodes in a sibling module, a relative import chain, a web folder."""
from .impl import NODES

WEB_DIRECTORY = "web"
