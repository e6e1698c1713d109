"""ComfyUI's schema API as packs import it (`from comfy_api.latest import io`): every declaration class of
`io_core.py`, and the dynamic types (`io.Autogrow`, `io.DynamicCombo`, `io.MatchType`) of `dynamic.py`."""
from __future__ import annotations

from nodes.comfy_api.dynamic import Autogrow, DynamicCombo, MatchType
from nodes.comfy_api.io_core import *  # noqa: F401,F403 - the module is the API
from nodes.comfy_api.io_core import _pruned  # noqa: F401 - used by packs' own dynamic inputs as in ComfyUI

__all__ = [name for name in dir() if not name.startswith("_")]
