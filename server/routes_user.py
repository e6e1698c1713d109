"""The user-data routes ComfyUI's frontend needs to load and save: /users, /settings,
/settings/{id}, /userdata?dir=, /userdata/{file} (GET, POST, DELETE), /userdata/{file}/move/{dest},
/v2/userdata?path=.

Single-user mode, as ComfyUI without `--multi-user`: everything lives in
`<user directory>/default/`; settings in `comfy.settings.json` there. Every file name goes
through `folders.resolve_inside` (400 on `..`, absolute paths, NUL, backslashes, drive letters,
symlinks out) and nothing outside that folder is ever read, listed, written or deleted.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
import threading
from pathlib import Path
from typing import Any, Iterator

from aiohttp import web

from folders import UnsafePathError, resolve_inside
from server.files import MAX_NAME_BYTES, Forbidden
from server.http import BadRequest, json_response, read_json
from server.keys import RUNTIME, SETTINGS

USER = "default"
SETTINGS_FILE = "comfy.settings.json"
_settings_lock = threading.Lock()


# Folders and files ComfyUI's frontend reads on its first visit: made with the user folder, so a new user's
# first page load asks for nothing that is missing (ComfyUI answers those first requests with 404s).
USER_FOLDERS = ("workflows", "subgraphs")
USER_FILES = {"comfy.templates.json": "[]"}
# Settings a user has not set: Loom is not ComfyUI, so ComfyUI's release notifications (fetched from its
# release service, outside this machine) do not apply.
DEFAULT_SETTINGS: dict[str, Any] = {"Comfy.Notification.ShowVersionUpdates": False}


def user_root(request: web.Request) -> Path:
    root = Path(request.app[RUNTIME].folders.user_directory) / USER
    for name in USER_FOLDERS:
        if not (root / name).is_dir():
            (root / name).mkdir(parents=True, exist_ok=True)
    for name, text in USER_FILES.items():
        if not (root / name).exists():
            (root / name).write_text(text, encoding="utf-8")
    return root


def user_path(request: web.Request, relative: str) -> Path:
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise Forbidden("the path is not valid Unicode") from None
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in relative.replace("\\", "/").split("/")):
        raise Forbidden(f"a name in the path is too long (at most {MAX_NAME_BYTES} bytes)")
    try:
        return resolve_inside(user_root(request), relative)
    except UnsafePathError as exc:
        raise Forbidden(str(exc)) from None


@contextmanager
def _file_system_errors(what: str) -> Iterator[None]:
    """OSErrors of a write or move as a 400 naming the reason (never the server's path)."""
    try:
        yield
    except (FileExistsError, NotADirectoryError):
        raise BadRequest(f"cannot {what}: a part of the path is a file, not a folder") from None
    except IsADirectoryError:
        raise BadRequest(f"cannot {what}: a folder exists at that path") from None
    except OSError as exc:
        raise BadRequest(f"cannot {what}: {exc.strerror or type(exc).__name__}") from None


def _not_found(what: str) -> web.Response:
    return json_response({"error": {"type": "not_found", "message": f"{what} not found"}}, status=404)


# ---- users and settings ------------------------------------------------------------------------

async def get_users(request: web.Request) -> web.Response:
    return json_response({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    return json_response({"error": {"type": "single_user", "message": "Loom runs in single-user mode"}},
                             status=400)


def _load_settings(request: web.Request) -> dict[str, Any]:
    path = user_root(request) / SETTINGS_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _save_settings(request: web.Request, settings: dict[str, Any]) -> None:
    path = user_root(request) / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=4, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


async def get_settings(request: web.Request) -> web.Response:
    return json_response({**DEFAULT_SETTINGS, **_load_settings(request)})


async def post_settings(request: web.Request) -> web.Response:
    body = await read_json(request)
    with _settings_lock:
        settings = _load_settings(request)
        settings.update(body)
        _save_settings(request, settings)
    return web.Response(status=200)


async def get_setting(request: web.Request) -> web.Response:
    setting = request.match_info["setting_id"]
    return json_response(_load_settings(request).get(setting, DEFAULT_SETTINGS.get(setting)))


async def post_setting(request: web.Request) -> web.Response:
    value = await read_json(request, expect=(dict, list, str, int, float, bool, type(None)))
    with _settings_lock:
        settings = _load_settings(request)
        settings[request.match_info["setting_id"]] = value
        _save_settings(request, settings)
    return web.Response(status=200)


# ---- userdata ------------------------------------------------------------------------------------

def _truthy(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


def _info(root: Path, path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size, "modified": stat.st_mtime}


async def list_userdata(request: web.Request) -> web.Response:
    """GET /userdata?dir=D&recurse=&full_info=&split=: the files under D (relative to D)."""
    directory = request.query.get("dir", "")
    if not directory:
        raise BadRequest("query parameter 'dir' is required")
    path = user_path(request, directory)
    if not path.is_dir():
        return _not_found("directory")
    recurse = _truthy(request.query.get("recurse"))
    files = sorted(p for p in (path.rglob("*") if recurse else path.glob("*")) if p.is_file())
    if _truthy(request.query.get("full_info")):
        return json_response([_info(path, p) for p in files])
    names = [p.relative_to(path).as_posix() for p in files]
    if _truthy(request.query.get("split")):
        return json_response([[n, *n.split("/")] for n in names])
    return json_response(names)


async def list_userdata_v2(request: web.Request) -> web.Response:
    """GET /v2/userdata?path=P: the entries directly in P, with type, size and mtime."""
    path = user_path(request, request.query.get("path", ""))
    if not path.is_dir():
        return _not_found("directory")
    root = user_root(request)
    out = []
    for entry in sorted(path.iterdir()):
        item: dict[str, Any] = {"name": entry.name, "path": entry.relative_to(root).as_posix(),
                                "type": "directory" if entry.is_dir() else "file"}
        if entry.is_file():
            stat = entry.stat()
            item.update(size=stat.st_size, modified=stat.st_mtime)
        out.append(item)
    return json_response(out)


# Content types of user files the frontend loads itself (its page links `userdata/user.css`); anything else is
# served as bytes.
USERDATA_TYPES = {".json": "application/json", ".css": "text/css"}
# What a missing file the frontend always reads answers: its stylesheet, and its workflow bookmarks.
USERDATA_DEFAULTS = {"user.css": ("", "text/css"),
                     "workflows/.index.json": ('{"favorites": []}', "application/json")}


async def get_userdata(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["file"]
    path = user_path(request, relative)
    if not path.is_file() and relative in USERDATA_DEFAULTS:  # files ComfyUI's frontend reads before any exist
        text, content_type = USERDATA_DEFAULTS[relative]
        return web.Response(text=text, content_type=content_type)
    if not path.is_file():
        return _not_found("file")
    return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff",
                                           "Content-Type": USERDATA_TYPES.get(path.suffix.lower(),
                                                                              "application/octet-stream")})


async def post_userdata(request: web.Request) -> web.Response:
    """Write the body to the file (`overwrite=false` → 409 when it exists)."""
    relative = request.match_info["file"]
    path = user_path(request, relative)
    if path == user_root(request).resolve():
        raise BadRequest("a file name is required")
    if path.exists() and not _truthy(request.query.get("overwrite"), True):
        return json_response({"error": {"type": "exists", "message": "file exists"}}, status=409)
    limit = request.app[SETTINGS].max_upload_bytes
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise BadRequest(f"body is over the limit of {limit} bytes")
    with _file_system_errors("write the file"):
        if path.is_dir():
            raise IsADirectoryError(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    root = user_root(request).resolve()
    if _truthy(request.query.get("full_info")):
        return json_response(_info(root, path))
    return json_response(path.relative_to(root).as_posix())


async def delete_userdata(request: web.Request) -> web.Response:
    path = user_path(request, request.match_info["file"])
    if not path.is_file():
        return _not_found("file")
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    source = user_path(request, request.match_info["file"])
    dest = user_path(request, request.match_info["dest"])
    if not source.is_file():
        return _not_found("file")
    if dest.exists() and not _truthy(request.query.get("overwrite"), True):
        return json_response({"error": {"type": "exists", "message": "destination exists"}}, status=409)
    with _file_system_errors("move the file"):
        if dest.is_dir():
            raise IsADirectoryError(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
    root = user_root(request).resolve()
    if _truthy(request.query.get("full_info")):
        return json_response(_info(root, dest))
    return json_response(dest.relative_to(root).as_posix())


ROUTES = [
    ("GET", "/users", get_users),
    ("POST", "/users", post_users),
    ("GET", "/settings", get_settings),
    ("POST", "/settings", post_settings),
    ("GET", "/settings/{setting_id}", get_setting),
    ("POST", "/settings/{setting_id}", post_setting),
    ("GET", "/userdata", list_userdata),
    ("GET", "/v2/userdata", list_userdata_v2),
    ("POST", "/userdata/{file}/move/{dest}", move_userdata),
    ("GET", "/userdata/{file}", get_userdata),
    ("POST", "/userdata/{file}", post_userdata),
    ("DELETE", "/userdata/{file}", delete_userdata),
]
