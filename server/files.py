"""Files over HTTP: GET /view, POST /upload/image, POST /upload/mask — path-safe.

Every name from a client goes through `folders.resolve_inside` against the folder of its
`type` (input, output, temp): `..`, absolute paths, NUL bytes, backslashes, drive letters and
symlinks leading out are refused (400) before anything is read or written.

Serving policy (why): output files are user content and must never run as a page on this
origin. A file is served inline only when its type is an image, video or audio format that
browsers do not execute (SVG is excluded: it can carry script) or plain text; anything else is
sent as `application/octet-stream` with `Content-Disposition: attachment`. Every answer has
`X-Content-Type-Options: nosniff` and a `Content-Security-Policy: default-src 'none'; sandbox`.

Uploads are bounded by `--max-upload-size`, must decode as an image (Pillow) or — for a name whose type is video/*
or audio/* (ComfyUI's editor uploads LoadVideo's files to /upload/image too) — open as a media file with a video or
audio stream (PyAV), and get ` (1)`,
` (2)`... suffixes on a name collision unless `overwrite` is set (an identical file is reused).
"""
from __future__ import annotations

import io
import json
import mimetypes
import os
from pathlib import Path
from typing import Any

import av
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from PIL import Image, ImageOps, UnidentifiedImageError

from folders import UnsafePathError, resolve_inside, split_annotation
from server.http import BadRequest, json_response, strict_dumps
from server.keys import RUNTIME, SETTINGS

SAFE_INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/avif",
    "image/x-icon", "video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "audio/mpeg",
    "audio/wav", "audio/x-wav", "audio/ogg", "audio/flac", "audio/x-flac", "audio/mp4", "audio/webm",
    "text/plain"})
_EXTRA_TYPES = {".webp": "image/webp", ".avif": "image/avif", ".flac": "audio/flac", ".mkv": "video/x-matroska",
                ".webm": "video/webm"}
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff",
                     "Content-Security-Policy": "default-src 'none'; sandbox"}


class Forbidden(web.HTTPBadRequest):
    """400 for a path that is unsafe (names the reason, never the resolved path)."""

    def __init__(self, message: str) -> None:
        super().__init__(text=strict_dumps({"error": {"type": "unsafe_path", "message": message}}),
                         content_type="application/json")


def folder_of(request: web.Request, type_name: str) -> Path:
    folders = request.app[RUNTIME].folders
    base = folders.directory_of_type(type_name) if type_name in ("input", "output", "temp") else None
    if base is None:
        raise BadRequest(f"type must be input, output or temp, got {type_name!r}")
    return Path(base)


def safe_path(base: Path, subfolder: str, filename: str, *, nested: bool = False) -> Path:
    """`base/subfolder/filename` inside `base`, or Forbidden. `nested` lets the file name hold
    folders itself ("sub/x.png", as /view accepts); uploads never do."""
    if not filename or (not nested and "/" in filename) or filename.endswith("/"):
        raise Forbidden(f"invalid file name {_short(filename)}")
    _check_parts(subfolder, filename, nested)
    try:
        resolve_inside(base, subfolder)
        return resolve_inside(base, f"{subfolder}/{filename}" if subfolder else filename)
    except UnsafePathError as exc:
        raise Forbidden(str(exc)) from None


MAX_NAME_BYTES = 255  # the longest file name (one path part) common file systems allow


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:60] + f"...' ({len(text)} characters)"


def _check_parts(subfolder: str, filename: str, nested: bool) -> None:
    """Forbidden for names no file system takes: too long, NUL, lone surrogates, `.`/`..` as the name."""
    for text, what in ((subfolder, "subfolder"), (filename, "file name")):
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise Forbidden(f"the {what} is not valid Unicode") from None
        if b"\0" in encoded:
            raise Forbidden(f"the {what} holds a NUL character")
        if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in text.replace("\\", "/").split("/")):
            raise Forbidden(f"the {what} {_short(text)} is too long (at most {MAX_NAME_BYTES} bytes per name)")
    last = filename.replace("\\", "/").rsplit("/", 1)[-1] if nested else filename
    if last.strip() in (".", "..", ""):
        raise Forbidden(f"invalid file name {filename!r}")


def content_type_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _disposition(kind: str, name: str) -> str:
    quoted = name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    return f'{kind}; filename="{quoted}"'


def _converted(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str, str] | None:
    """Re-encode an image for `preview=webp;90|jpeg;90` or `channel=rgb|a`; None when neither."""
    if not preview and channel in (None, "", "rgba"):
        return None
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError):
        return None
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size)
        image.putalpha(rgba.getchannel("A"))
    elif channel not in (None, "", "rgba"):
        raise BadRequest(f"channel must be rgb, a or rgba, got {channel!r}")
    stem = path.stem
    if preview:
        fmt, _, quality = preview.partition(";")
        fmt = fmt.lower()
        if fmt not in ("webp", "jpeg"):
            raise BadRequest(f"preview format must be webp or jpeg, got {fmt!r}")
        try:
            q = int(quality) if quality else 90
        except ValueError:
            raise BadRequest(f"preview quality must be an integer, got {quality!r}") from None
        if fmt == "jpeg":
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt.upper(), quality=max(1, min(q, 100)))
        return buffer.getvalue(), f"image/{fmt}", f"{stem}.{fmt}"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), "image/png", f"{stem}.png"


async def view(request: web.Request) -> web.StreamResponse:
    """GET /view?filename=&subfolder=&type=output&preview=&channel=."""
    query = request.query
    filename, annotated = split_annotation(query.get("filename", ""))
    base = folder_of(request, annotated or query.get("type") or "output")
    path = safe_path(base, query.get("subfolder", ""), filename, nested=True)
    if not path.is_file():
        return json_response({"error": {"type": "not_found", "message": f"no file {filename!r}"}}, status=404)
    converted = _converted(path, query.get("preview"), query.get("channel"))
    if converted is not None:
        body, ctype, name = converted
        return web.Response(body=body, content_type=ctype,
                            headers={"Content-Disposition": _disposition("inline", name), **_SECURITY_HEADERS})
    ctype = content_type_of(path.name)
    inline = ctype in SAFE_INLINE_TYPES
    headers = {"Content-Disposition": _disposition("inline" if inline else "attachment", path.name),
               "Content-Type": ctype if inline else "application/octet-stream", **_SECURITY_HEADERS}
    if ctype == "text/plain":
        headers["Content-Type"] = "text/plain; charset=utf-8"
    return web.FileResponse(path, headers=headers)


# ---- uploads ---------------------------------------------------------------------------------

async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            body = {"error": {"type": "too_large", "message": f"upload is over the limit of {limit} bytes"}}
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size, text=strict_dumps(body),
                                                content_type="application/json")
        chunks.append(chunk)


async def read_upload(request: web.Request) -> tuple[dict[str, str], str, bytes]:
    """The multipart form: its text fields, the `image` part's file name and bytes."""
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit + (1 << 20):
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise BadRequest("expected a multipart/form-data body with an 'image' file") from None
    try:
        fields, filename, data = await _read_parts(reader, limit)
    except (HttpProcessingError, ValueError, UnicodeError):
        raise BadRequest("the multipart body is malformed") from None
    if not data:
        raise BadRequest("no 'image' file in the upload")
    return fields, filename, data


async def _read_parts(reader: Any, limit: int) -> tuple[dict[str, str], str, bytes]:
    fields: dict[str, str] = {}
    filename, data = "", b""
    while True:
        part = await reader.next()
        if part is None:
            return fields, filename, data
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "image":
            filename = part.filename or ""
            data = await _read_part(part, limit)
        elif part.name:
            fields[part.name] = (await _read_part(part, 1 << 20)).decode("utf-8", "replace")


def _check_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise BadRequest("the uploaded file is not an image Loom can read") from None


def _check_upload(data: bytes, filename: str) -> None:
    """An image, or a video/audio file by name whose container PyAV opens with a video or audio stream."""
    kind = content_type_of(filename).split("/")[0]
    if kind not in ("video", "audio"):
        _check_image(data)
        return
    try:
        with av.open(io.BytesIO(data)) as container:
            if container.streams.video or container.streams.audio:
                return
    except (av.FFmpegError, ValueError, OSError):
        pass
    raise BadRequest(f"the uploaded file is not a {kind} file Loom can read")


def _free_name(base: Path, subfolder: str, filename: str, data: bytes | None, overwrite: bool) -> tuple[str, Path]:
    """A name that does not collide: `name (1).ext`, `name (2).ext`...; an identical existing
    file is reused."""
    target = safe_path(base, subfolder, filename)
    if overwrite or not target.exists():
        return filename, target
    stem, suffix = Path(filename).stem, Path(filename).suffix
    counter = 0
    while target.exists():
        if data is not None and target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
            return target.name, target
        counter += 1
        target = safe_path(base, subfolder, f"{stem} ({counter}){suffix}")
    return target.name, target


def write_upload(target: Path, data: bytes, subfolder: str, *, overwrite: bool) -> None:
    """Write `data` at `target` (making its folder); a path the file system refuses (a subfolder
    that is a file, a name that is a folder) is a 400 naming the reason, not the path."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise Forbidden(f"a folder named {target.name!r} exists where the file would go")
        if overwrite or not target.exists():
            target.write_bytes(data)
    except (FileExistsError, NotADirectoryError):
        raise Forbidden(f"the subfolder {_short(subfolder)} is not a folder (a part of it is a file)") from None
    except OSError as exc:
        raise Forbidden(f"the file cannot be written: {exc.strerror or type(exc).__name__}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


async def upload_image(request: web.Request) -> web.Response:
    """POST /upload/image: multipart `image`, `subfolder`, `type`, `overwrite`."""
    fields, filename, data = await read_upload(request)
    _check_upload(data, filename or "image.png")
    type_name = fields.get("type") or "input"
    base = folder_of(request, type_name)
    subfolder = fields.get("subfolder", "")
    name, target = _free_name(base, subfolder, filename or "image.png", data, _truthy(fields.get("overwrite")))
    write_upload(target, data, subfolder, overwrite=_truthy(fields.get("overwrite")))
    return json_response({"name": name, "subfolder": subfolder, "type": type_name})


def _original(request: web.Request, ref: dict[str, Any]) -> Path:
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise BadRequest("original_ref must be a JSON object with 'filename'")
    base = folder_of(request, ref.get("type") or "input")
    path = safe_path(base, str(ref.get("subfolder") or ""), ref["filename"])
    if not path.is_file():
        raise web.HTTPNotFound(text=strict_dumps({"error": {"type": "not_found", "message": "original image not found"}}),
                               content_type="application/json")
    return path


async def upload_mask(request: web.Request) -> web.Response:
    """POST /upload/mask: the uploaded image's alpha becomes the alpha of `original_ref`'s image;
    the result is written (PNG) under the uploaded name."""
    fields, filename, data = await read_upload(request)
    mask = _check_image(data)
    try:
        ref = json.loads(fields.get("original_ref", ""))
    except ValueError:
        raise BadRequest("original_ref must be JSON") from None
    original_path = _original(request, ref)
    with Image.open(original_path) as original:
        result = ImageOps.exif_transpose(original).convert("RGBA")
    alpha = mask.convert("RGBA").getchannel("A")
    if alpha.size != result.size:
        alpha = alpha.resize(result.size, Image.Resampling.BILINEAR)
    result.putalpha(alpha)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG", compress_level=4)
    type_name = fields.get("type") or "input"
    base = folder_of(request, type_name)
    subfolder = fields.get("subfolder", "")
    name, target = _free_name(base, subfolder, filename or "mask.png", None, _truthy(fields.get("overwrite")))
    write_upload(target, buffer.getvalue(), subfolder, overwrite=True)
    return json_response({"name": name, "subfolder": subfolder, "type": type_name})


async def internal_files(request: web.Request) -> web.Response:
    """`GET /internal/files/{input|output|temp}`: the names of the folder's visible files (not its subfolders, hidden
    files or symlinks), newest first — ComfyUI's route behind LoadImageOutput's refresh button."""
    type_name = request.match_info["directory_type"]
    if type_name not in ("input", "output", "temp"):
        return web.json_response({"error": "Invalid directory type"}, status=400)
    base = Path(request.app[RUNTIME].folders.directory_of_type(type_name))
    entries: list[tuple[float, str]] = []
    if base.is_dir():
        for entry in os.scandir(base):
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                continue
            entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    entries.sort(key=lambda item: -item[0])
    return web.json_response([name for _, name in entries])


ROUTES = [
    ("GET", "/internal/files/{directory_type}", internal_files),
    ("GET", "/view", view),
    ("POST", "/upload/image", upload_image),
    ("POST", "/upload/mask", upload_mask),
]
