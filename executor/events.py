"""Typed progress and status events of one prompt run, in ComfyUI's websocket vocabulary.

An `Event` is one JSON websocket message (`{"type": ..., "data": ...}`) with exactly
ComfyUI's data fields; a `PreviewImage` is one binary frame (a step preview). The executor
hands both to an `EventSink`; the server forwards them to the submitting client and the
headless runner draws a progress display from them. Nothing here knows about HTTP.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

# ComfyUI's message types, in the order a prompt produces them.
EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
PROGRESS = "progress"
EXECUTED = "executed"
EXECUTION_SUCCESS = "execution_success"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"

# Binary frame codes (ComfyUI's `BinaryEventTypes.PREVIEW_IMAGE` and image format ids).
BINARY_PREVIEW_IMAGE = 1
# ComfyUI's `PREVIEW_IMAGE_WITH_METADATA`: `>I` 4, `>I` length of a JSON header, the header
# (node_id, display_node_id, parent_node_id, real_node_id, prompt_id, image_type), the image.
BINARY_PREVIEW_WITH_METADATA = 4
IMAGE_FORMAT_CODES = {"JPEG": 1, "PNG": 2}
IMAGE_MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass(frozen=True)
class Event:
    """One JSON message: `type` and its `data` dict (ComfyUI's fields)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "data": self.data}


@dataclass(frozen=True)
class PreviewImage:
    """A step preview for the client: encoded image bytes for one node of one prompt."""

    prompt_id: str
    node_id: str
    image_format: Literal["JPEG", "PNG"]
    data: bytes
    metadata: dict[str, Any] | None = None

    def to_frame(self) -> bytes:
        """The websocket binary frame: event type, image format (both 4-byte big-endian), bytes."""
        return (BINARY_PREVIEW_IMAGE.to_bytes(4, "big") + IMAGE_FORMAT_CODES[self.image_format].to_bytes(4, "big")
                + self.data)

    def to_frame_with_metadata(self) -> bytes:
        """The event-type-4 frame, for clients that announced `supports_preview_metadata`."""
        header = json.dumps({**(self.metadata or {"node_id": self.node_id, "prompt_id": self.prompt_id}),
                             "image_type": IMAGE_MIME_TYPES[self.image_format]}).encode("utf-8")
        return (BINARY_PREVIEW_WITH_METADATA.to_bytes(4, "big") + len(header).to_bytes(4, "big") + header
                + self.data)


EventSink = Callable[[Event | PreviewImage], None]


def timestamp_ms() -> int:
    """Milliseconds since the epoch, as ComfyUI stamps its status messages."""
    return int(time.time() * 1000)


def encode_preview(prompt_id: str, node_id: str, preview: Any,
                   metadata: dict[str, Any] | None = None) -> PreviewImage | None:
    """Turn what a node passed as `preview` into a binary frame.

    Accepts a PIL image (sent as JPEG), ComfyUI's `("JPEG"|"PNG", image, max_size)` tuple, or
    already encoded `(format, bytes)`. Returns None for anything else.
    """
    image_format = "JPEG"
    max_size = None
    if isinstance(preview, tuple) and preview and preview[0] in IMAGE_FORMAT_CODES:
        image_format = preview[0]
        if len(preview) > 2:
            max_size = preview[2]
        preview = preview[1] if len(preview) > 1 else None
    if isinstance(preview, (bytes, bytearray)):
        return PreviewImage(prompt_id, node_id, image_format, bytes(preview), metadata)  # type: ignore[arg-type]
    if not hasattr(preview, "save") or not hasattr(preview, "size"):
        return None
    image = preview
    if max_size and max(image.size) > max_size and hasattr(image, "copy"):
        image = image.copy()
        image.thumbnail((max_size, max_size))
    if image_format == "JPEG" and getattr(image, "mode", "RGB") not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=95) if image_format == "JPEG" else image.save(buffer, format="PNG")
    return PreviewImage(prompt_id, node_id, image_format, buffer.getvalue(), metadata)  # type: ignore[arg-type]


def null_sink(_: Event | PreviewImage) -> None:
    """An `EventSink` that drops everything."""
