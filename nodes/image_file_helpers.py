"""Image files in and out: PNG writing with workflow metadata, filename prefixes and counters,
and loading images and masks. Shared by every node that saves or loads pictures.

Behaviour follows ComfyUI (`nodes.py` SaveImage/LoadImage, `folder_paths.get_save_image_path`,
and the editor's `%date:...%` / `%Node.widget%` prefix replacements), with two deliberate
differences: files are created exclusively, so a save never overwrites an existing file, and a
16-bit greyscale PNG keeps its full precision instead of being rounded to 8 bits first.
"""
from __future__ import annotations

import hashlib
import json
import mimetypes
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from folders import UnsafePathError, ensure_directory, resolve_inside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".avif",
                  ".ico", ".tga", ".ppm", ".pgm", ".pbm", ".heic", ".heif", ".jxl")
# ComfyUI loads every frame of an image as a batch, except for these formats (MPO: the
# second "frame" of a camera's multi-picture JPEG is a thumbnail or a stereo view).
SINGLE_FRAME_FORMATS = ("MPO",)
SAVE_COMPRESS_LEVEL = 4
PREVIEW_COMPRESS_LEVEL = 1
_FILENAME_UNSAFE = re.compile(r'[/?<>\\:*|"]')
_DATE_TOKENS = re.compile(r"yyyy|yyy|yy|MM?|dd?|hh?|mm?|ss?")
_MAX_SAVE_ATTEMPTS = 10000


def is_image_name(name: str) -> bool:
    """True when the file name looks like an image (by suffix, then by MIME type)."""
    lower = name.lower()
    if lower.endswith(IMAGE_SUFFIXES):
        return True
    kind, _ = mimetypes.guess_type(lower, strict=False)
    return bool(kind and kind.startswith("image/"))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content (LoadImage's IS_CHANGED)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- filename prefixes ------------------------------------------------------------------------

def format_date(pattern: str, now: time.struct_time) -> str:
    """ComfyUI's editor date format: yyyy, yy, MM/M, dd/d, hh/h (24 h), mm/m, ss/s, zero-padded
    to the token's length; everything else is kept."""
    parts = {"M": now.tm_mon, "d": now.tm_mday, "h": now.tm_hour, "m": now.tm_min, "s": now.tm_sec}

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "yyyy":
            return str(now.tm_year)
        if token == "yy":
            return str(now.tm_year)[2:]
        if token == "yyy":
            return token
        return str(parts[token[0]]).zfill(len(token))

    return _DATE_TOKENS.sub(one, pattern)


def _widget_value(prompt: Mapping[str, Any] | None, node_name: str, widget: str) -> str | None:
    """The constant input `widget` of the first node whose class type (ComfyUI's default
    "Node name for S&R"), else whose title, is `node_name`; None when there is none."""
    if not isinstance(prompt, Mapping):
        return None
    nodes = [n for n in prompt.values() if isinstance(n, Mapping)]
    matches = [n for n in nodes if n.get("class_type") == node_name]
    if not matches:
        matches = [n for n in nodes if isinstance(n.get("_meta"), Mapping) and n["_meta"].get("title") == node_name]
    for node in matches[:1]:
        value = (node.get("inputs") or {}).get(widget)
        if value is None or isinstance(value, list):
            return None  # missing, or a link: the editor has no widget value either
        if isinstance(value, bool):
            value = "true" if value else "false"
        return _FILENAME_UNSAFE.sub("_", str(value))
    return None


def format_prefix(prefix: str, *, width: int = 0, height: int = 0, prompt: Mapping[str, Any] | None = None,
                  now: time.struct_time | None = None) -> str:
    """Expand the `%...%` tokens of a filename prefix.

    Editor tokens (ComfyUI applies these in the browser; Loom also applies them here so the
    API and the headless runner behave the same): `%date:FORMAT%` and `%Node name.widget%`.
    Server tokens (ComfyUI `get_save_image_path`): `%year% %month% %day% %hour% %minute%
    %second% %width% %height%`. Unknown tokens are left as they are.
    """
    if "%" not in prefix:
        return prefix
    now = now or time.localtime()
    simple = {"year": str(now.tm_year), "month": f"{now.tm_mon:02d}", "day": f"{now.tm_mday:02d}",
              "hour": f"{now.tm_hour:02d}", "minute": f"{now.tm_min:02d}", "second": f"{now.tm_sec:02d}",
              "width": str(width), "height": str(height)}

    def one(match: re.Match[str]) -> str:
        text = match.group(1)
        if text.startswith("date:"):
            return format_date(text[5:], now)
        if text in simple:
            return simple[text]
        node_name, dot, widget = text.partition(".")
        if dot and "." not in widget:
            value = _widget_value(prompt, node_name, widget)
            if value is not None:
                return value
        return match.group(0)

    return re.sub(r"%([^%]+)%", one, prefix)


@dataclass(frozen=True)
class SavePath:
    """Where a batch of images goes: `folder/filename_<counter>_.png`, `subfolder` relative
    to the base folder ("/"-separated, "" for the base itself)."""

    folder: Path
    filename: str
    counter: int
    subfolder: str


def split_prefix(prefix: str) -> tuple[str, str]:
    """(subfolder, filename) of an expanded prefix, normalised like ComfyUI's `os.path.normpath`.

    Backslashes count as folder separators (workflows made on Windows). Raises
    `UnsafePathError` when the prefix is absolute, empty or climbs out with `..`.
    """
    text = prefix.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UnsafePathError(f"filename prefix {prefix!r} is an absolute path; saving outside the "
                              "output folder is not allowed")
    normal = posixpath.normpath(text) if text else ""
    if normal in ("", ".") or normal == ".." or normal.startswith("../"):
        raise UnsafePathError(f"filename prefix {prefix!r} leads outside the output folder (or names no file)")
    subfolder, filename = posixpath.split(normal)
    return subfolder, filename


def next_counter(folder: Path, filename: str) -> int:
    """One more than the highest N of the files `filename_N...` in `folder` (1 when none).

    As in ComfyUI, N is the run of digits right after `filename_`, ended by `_` or the name's
    end, compared case-insensitively.
    """
    pattern = re.compile(re.escape(filename) + r"_(\d+)(?:_|$)", re.IGNORECASE)
    highest = 0
    try:
        names = [entry.name for entry in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return 1
    for name in names:
        match = pattern.match(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def save_image_path(prefix: str, base: Path, *, width: int = 0, height: int = 0,
                    prompt: Mapping[str, Any] | None = None) -> SavePath:
    """Expand `prefix`, check that it stays inside `base` (symlinks too), create the folder,
    and find the next counter."""
    subfolder, filename = split_prefix(format_prefix(prefix, width=width, height=height, prompt=prompt))
    folder = resolve_inside(base, subfolder)
    ensure_directory(folder)
    return SavePath(folder=folder, filename=filename, counter=next_counter(folder, filename), subfolder=subfolder)


# ---- writing ----------------------------------------------------------------------------------

def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One H×W×C float image in 0..1 as a PIL image: `uint8(clip(255·x, 0, 255))` (truncating,
    as ComfyUI does); C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA)."""
    array = image.detach().to("cpu", torch.float32).numpy()
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape H×W×C with C in 1..4, got {tuple(image.shape)}")
    pixels = np.clip(255.0 * array, 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        return Image.fromarray(pixels[..., 0], mode="L")
    return Image.fromarray(pixels, mode={2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]])


def png_metadata(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> PngInfo | None:
    """tEXt chunks: `prompt` (the API JSON) and one per `extra_pnginfo` key (`workflow`, the UI
    JSON, and any other key a client sent), each JSON-encoded as ComfyUI writes them."""
    if prompt is None and not extra_pnginfo:
        return None
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(str(key), json.dumps(value))
    return info


def write_png_exclusive(image: Image.Image, folder: Path, filename: str, counter: int,
                        pnginfo: PngInfo | None, compress_level: int) -> tuple[str, int]:
    """Write `filename_<counter:05>_.png`, taking the next free counter if that name exists
    (never overwriting). Returns (file name, counter used)."""
    for _ in range(_MAX_SAVE_ATTEMPTS):
        name = f"{filename}_{counter:05}_.png"
        path = folder / name
        try:
            handle = open(path, "xb")
        except FileExistsError:
            counter += 1
            continue
        try:
            with handle:
                image.save(handle, format="PNG", pnginfo=pnginfo, compress_level=compress_level)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return name, counter
    raise FileExistsError(f"no free file name for {filename} in {folder} after {_MAX_SAVE_ATTEMPTS} tries")


def save_images(images: torch.Tensor, prefix: str, base: Path, type_name: str, *, prompt: Any = None,
                extra_pnginfo: Mapping[str, Any] | None = None,
                compress_level: int = SAVE_COMPRESS_LEVEL) -> list[dict[str, str]]:
    """Save a B×H×W×C batch as PNGs under `base` and return ComfyUI's ui entries
    `[{"filename", "subfolder", "type"}]`. `%batch_num%` in the prefix becomes the image's index."""
    if images.ndim == 3:
        images = images[None]
    height, width = int(images.shape[1]), int(images.shape[2])
    where = save_image_path(prefix, base, width=width, height=height, prompt=prompt)
    pnginfo = png_metadata(prompt, extra_pnginfo)
    counter = where.counter
    results = []
    for index, image in enumerate(images):
        filename = where.filename.replace("%batch_num%", str(index))
        name, counter = write_png_exclusive(tensor_to_pil(image), where.folder, filename, counter, pnginfo,
                                            compress_level)
        results.append({"filename": name, "subfolder": where.subfolder, "type": type_name})
        counter += 1
    return results


# ---- reading ----------------------------------------------------------------------------------

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _frame_to_rgb(frame: Image.Image) -> np.ndarray:
    """H×W×3 float32 in 0..1. 16-bit and 32-bit integer greyscale frames are scaled by 1/65535
    (ComfyUI divides 'I' frames by 255 and clips, which rounds 16-bit data to 8 bits)."""
    if frame.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(frame, dtype=np.float64) / 65535.0
        grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0


def _frame_mask(frame: Image.Image) -> np.ndarray | None:
    """1 − alpha (ComfyUI's MASK: 1 where the picture is transparent), or None without alpha."""
    if "A" in frame.getbands():
        alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    else:
        return None
    return 1.0 - alpha


def pil_to_batch(picture: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE B×H×W×3, MASK B×H×W) from an opened picture, as ComfyUI's LoadImage makes them.

    Every frame becomes a batch entry (one for MPO files); frames whose size differs from the
    first are skipped; EXIF orientation is applied; without alpha the mask is 64×64 zeros.
    """
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    for raw in ImageSequence.Iterator(picture):
        frame = ImageOps.exif_transpose(raw) or raw
        if size is None:
            size = frame.size
        if frame.size != size:
            continue
        images.append(_frame_to_rgb(frame))
        mask = _frame_mask(frame)
        masks.append(mask if mask is not None else np.zeros((64, 64), dtype=np.float32))
        if picture.format in SINGLE_FRAME_FORMATS:
            break
    if not images:
        raise ValueError("the image has no frames")
    if len({m.shape for m in masks}) > 1:
        # Some frames have alpha and some not: give the frames without alpha an empty mask.
        height, width = images[0].shape[:2]
        masks = [m if m.shape == (height, width) else np.zeros((height, width), np.float32) for m in masks]
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def load_image_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Open and decode an image file into (IMAGE, MASK); see `pil_to_batch`."""
    with Image.open(path) as picture:
        return pil_to_batch(picture)


def image_names(names: Iterable[str]) -> list[str]:
    """The image files among `names`, sorted."""
    return sorted(n for n in names if is_image_name(n))
