"""Routes ComfyUI's official frontend calls beyond the classic API, answered as ComfyUI answers them.

- `/templates/{file}`: the workflow templates of the optional `comfyui-workflow-templates` packages
  (index files and template JSON from `comfyui_workflow_templates_json`, thumbnails and other assets
  from the media bundle the core manifest names). Not under `/api/`: the frontend asks for them as files.
- `/experiment/models` (folder kinds with their folders), `/experiment/models/{folder}` (every model file
  with `name`, `pathIndex`, `modified`, `created`, `size`), `/experiment/models/preview/{folder}/{index}/{file}`
  (a preview image beside the model, as WebP).
- `/view_metadata/{folder}?filename=`: a safetensors file's `__metadata__`.
- `/internal/logs`, `/internal/logs/raw`, `/internal/logs/subscribe`, `/internal/folder_paths`
  (`/internal/files/{type}` is `server/files.py`'s).
- `/user.css`: an empty stylesheet (the frontend's page links it; a user's own CSS is `userdata/user.css`).

The template packages are found without importing them; when they are absent the template routes answer 404.
"""
from __future__ import annotations

import importlib.util
import io
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from folders import UnsafePathError, resolve_inside
from server.http import BadRequest, add_api_routes
from server.keys import RUNTIME
from server.log_buffer import LOG_BUFFER_KEY, LogBuffer, log_buffer_lifecycle, terminal_size

log = logging.getLogger(__name__)

TEMPLATES_JSON_PACKAGE = "comfyui_workflow_templates_json"
TEMPLATES_CORE_PACKAGE = "comfyui_workflow_templates_core"
HIDDEN_MODEL_KINDS = ("configs", "custom_nodes")
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _asset_packages() -> dict[str, str]:
    """Asset file name → the package that holds it, from the core package's manifest."""
    core = _package_dir(TEMPLATES_CORE_PACKAGE)
    if core is None or not (core / "manifest.json").is_file():
        return {}
    manifest = json.loads((core / "manifest.json").read_text(encoding="utf-8"))
    owners: dict[str, str] = {}
    for entry in manifest.get("templates", []):
        for asset in entry.get("assets", []):
            bundle = asset.get("bundle") or entry.get("bundle", "")
            owners[asset["filename"]] = "comfyui_workflow_templates_" + bundle.replace("-", "_")
    return owners


def template_file(name: str) -> Path | None:
    """The installed file behind `/templates/<name>`, or None."""
    candidates = [TEMPLATES_JSON_PACKAGE]
    owner = _asset_packages().get(name)
    if owner:
        candidates.append(owner)
    for package in candidates:
        folder = _package_dir(package)
        if folder is None:
            continue
        try:
            path = resolve_inside(folder / "templates", name)
        except UnsafePathError:
            return None
        if path.is_file():
            return path
    return None


async def get_template(request: web.Request) -> web.StreamResponse:
    path = template_file(request.match_info["name"])
    if path is None:
        return web.json_response({"error": {"type": "not_found", "message": "no such template file"}}, status=404)
    return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})


# ---- the model browser -------------------------------------------------------------------------------------------

def _folders(request: web.Request) -> Any:
    return request.app[RUNTIME].folders


async def get_model_folders(request: web.Request) -> web.Response:
    folders = _folders(request)
    return web.json_response([{"name": kind, "folders": [str(p) for p in folders.folder_paths(kind)]}
                              for kind in folders.kinds() if kind not in HIDDEN_MODEL_KINDS])


def _model_files(folder: Path, index: int, suffixes: tuple[str, ...]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if suffixes and path.suffix.lower() not in suffixes:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append({"name": relative.as_posix(), "pathIndex": index, "modified": stat.st_mtime,
                      "created": stat.st_ctime, "size": stat.st_size})
    return found


async def get_model_files(request: web.Request) -> web.Response:
    folders = _folders(request)
    kind = request.match_info["folder"]
    if kind in HIDDEN_MODEL_KINDS or kind not in folders.kinds():
        return web.json_response({"error": {"type": "not_found", "message": f"unknown model folder {kind!r}"}},
                                 status=404)
    suffixes = tuple(s.lower() for s in folders.suffixes(kind))
    listing: list[dict[str, Any]] = []
    for index, folder in enumerate(folders.folder_paths(kind)):
        listing += _model_files(Path(folder), index, suffixes)
    return web.json_response(listing)


def _model_path(request: web.Request, kind: str, index: int, name: str) -> Path | None:
    folders = _folders(request)
    if kind not in folders.kinds():
        return None
    paths = folders.folder_paths(kind)
    if not 0 <= index < len(paths):
        return None
    try:
        return resolve_inside(Path(paths[index]), name)
    except UnsafePathError as error:
        raise BadRequest(str(error)) from None


async def get_model_preview(request: web.Request) -> web.Response:
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise BadRequest("the path index must be an integer") from None
    model = _model_path(request, request.match_info["folder"], index, request.match_info["name"])
    preview = next((p for p in _preview_candidates(model) if p.is_file()), None) if model else None
    if preview is None:
        return web.json_response({"error": {"type": "not_found", "message": "no preview image"}}, status=404)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(preview) as image:
            out = io.BytesIO()
            image.save(out, format="WEBP")
    except (OSError, UnidentifiedImageError):
        return web.json_response({"error": {"type": "not_found", "message": "the preview is not an image"}},
                                 status=404)
    return web.Response(body=out.getvalue(), content_type="image/webp")


def _preview_candidates(model: Path) -> list[Path]:
    stem = model.with_suffix("")
    return [Path(f"{stem}{s}") for s in PREVIEW_SUFFIXES] + [Path(f"{stem}.preview{s}") for s in PREVIEW_SUFFIXES]


async def get_view_metadata(request: web.Request) -> web.Response:
    """The `__metadata__` of `filename` in the model folder (404 when absent or not safetensors)."""
    folders = _folders(request)
    kind, name = request.match_info["folder"], request.query.get("filename", "")
    if not name:
        raise BadRequest("query parameter 'filename' is required")
    if kind not in folders.kinds():
        return web.json_response({"error": {"type": "not_found", "message": f"unknown model folder {kind!r}"}},
                                 status=404)
    try:
        path = folders.full_path(kind, name)
    except (FileNotFoundError, UnsafePathError, ValueError):
        path = None
    if path is None or not Path(path).is_file() or Path(path).suffix.lower() != ".safetensors":
        return web.json_response({"error": {"type": "not_found", "message": "no safetensors file of that name"}},
                                 status=404)
    from diffusion.files.checkpoint import CheckpointError, read_metadata

    try:
        return web.json_response(read_metadata(path))
    except (CheckpointError, OSError, ValueError):
        return web.json_response({"error": {"type": "not_found", "message": "the file has no readable header"}},
                                 status=404)


# ---- /internal ---------------------------------------------------------------------------------------------------

async def get_logs(request: web.Request) -> web.Response:
    entries = request.app[LOG_BUFFER_KEY].entries()
    return web.json_response("".join(f"{entry['t']} - {entry['m']}" for entry in entries))


async def get_raw_logs(request: web.Request) -> web.Response:
    cols, rows = terminal_size()
    entries = request.app[LOG_BUFFER_KEY].entries()
    return web.json_response({"entries": entries, "size": {"cols": cols, "rows": rows}})


async def patch_logs_subscribe(request: web.Request) -> web.Response:
    """`{"clientId", "enabled"}`: send (or stop sending) new log lines to that websocket client."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("clientId"), str):
        raise BadRequest("expected {\"clientId\": string, \"enabled\": boolean}")
    request.app[LOG_BUFFER_KEY].subscribe(body["clientId"], bool(body.get("enabled")))
    return web.Response(status=200)


async def get_folder_paths(request: web.Request) -> web.Response:
    folders = _folders(request)
    return web.json_response({kind: [str(p) for p in folders.folder_paths(kind)] for kind in folders.kinds()})


async def get_user_css(request: web.Request) -> web.Response:
    return web.Response(text="", content_type="text/css", headers={"Cache-Control": "no-cache"})


API_ROUTES = [
    ("GET", "/experiment/models", get_model_folders),
    ("GET", "/experiment/models/{folder}", get_model_files),
    ("GET", "/experiment/models/preview/{folder}/{index}/{name:.+}", get_model_preview),
    ("GET", "/view_metadata/{folder}", get_view_metadata),
]
INTERNAL_ROUTES = [
    ("GET", "/internal/logs", get_logs),
    ("GET", "/internal/logs/raw", get_raw_logs),
    ("PATCH", "/internal/logs/subscribe", patch_logs_subscribe),
    ("GET", "/internal/folder_paths", get_folder_paths),
]
FILE_ROUTES = [
    ("GET", "/templates/{name:.+}", get_template),
    ("GET", "/user.css", get_user_css),
]


def setup(app: web.Application) -> None:
    """Add these routes (API_ROUTES bare and under /api/, the others as given) and the log buffer."""
    buffer = LogBuffer()
    app[LOG_BUFFER_KEY] = buffer
    app.cleanup_ctx.append(log_buffer_lifecycle)
    add_api_routes(app, API_ROUTES)
    for method, path, handler in (*INTERNAL_ROUTES, *FILE_ROUTES):
        app.router.add_route(method, path, handler)
