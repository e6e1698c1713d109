"""Which browser front-end is served at `/`: Loom's editor (web/dist, built by `npm run build`
in web/) or, with `--front-end comfyui`, ComfyUI's official frontend from the optional
`comfyui-frontend-package` pip package (its `static/` folder).

Owns finding those folders and the small page shown when neither is available, which says how
to get one. The package is located without importing it (`importlib.util.find_spec`).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOM_DIST = REPO_ROOT / "web" / "dist"
# Loom's own extension for ComfyUI's frontend (served as /extensions/loom/ with --front-end comfyui only).
COMFYUI_EXTENSIONS = REPO_ROOT / "web" / "comfyui_extensions"

MISSING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Loom</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Loom is running</h1>
<p>The API is up (try <a href="/system_stats">/system_stats</a> or <a href="/object_info">/object_info</a>),
but the browser editor has not been built yet.</p>
<p>Build it with <code>cd web &amp;&amp; npm install &amp;&amp; npm run build</code> and reload this page,
or install ComfyUI's frontend with <code>pip install comfyui-frontend-package</code> and start Loom with
<code>python main.py --front-end comfyui</code>.</p>
</body></html>
"""


def comfyui_frontend_root() -> Path | None:
    """The `static/` folder of the installed `comfyui_frontend_package`, or None."""
    try:
        spec = importlib.util.find_spec("comfyui_frontend_package")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    return None


def web_root(front_end: str, override: Path | None = None) -> Path | None:
    """The folder to serve at `/` (None: serve MISSING_PAGE)."""
    if override is not None:
        return override
    if front_end == "comfyui":
        root = comfyui_frontend_root()
        if root is not None:
            return root
        log.error("--front-end comfyui: the comfyui-frontend-package is not installed "
                  "(pip install comfyui-frontend-package); serving Loom's editor instead")
    if (LOOM_DIST / "index.html").is_file():
        return LOOM_DIST
    return None
