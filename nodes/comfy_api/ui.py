"""What a schema node shows in the editor (`from comfy_api.latest import ui`).

Each helper is passed as `io.NodeOutput(..., ui=helper)` and becomes the node's `ui` dict
(the `output` of the `executed` websocket message and of the history) through `as_dict()`,
in ComfyUI's shapes (`comfy_api/latest/_ui.py`): images `{"images": [{"filename",
"subfolder", "type"}], "animated": (False,)}`, text `{"text": (value,)}`. Images are written
with Loom's own PNG writer (`nodes/image_file_helpers.py`) into the folders of the running node.
"""
from __future__ import annotations

import secrets
import string
from typing import Any

import torch

from nodes import image_file_helpers
from nodes.context import current


class _UIOutput:
    """Base of the ui helpers: `as_dict()` is the node's ui entry."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class SavedResult(dict):
    """One saved file as the editor addresses it (`filename`, `subfolder`, `type`)."""

    def __init__(self, filename: str, subfolder: str = "", type: str = "output") -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=type)


class SavedImages(_UIOutput):
    """Images already written (a list of `SavedResult`)."""

    def __init__(self, results: list[dict[str, Any]], is_animated: bool = False) -> None:
        self.results, self.is_animated = list(results), is_animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.results, "animated": (self.is_animated,)}


def _temp_prefix() -> str:
    # A random suffix, as ComfyUI's preview nodes use, so previews of different nodes keep apart.
    return "ComfyUI_temp_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))


class PreviewImage(_UIOutput):
    """Show a B×H×W×C image batch: written as PNGs into the temp folder now."""

    def __init__(self, image: torch.Tensor, animated: bool = False, cls: Any = None, **_: Any) -> None:
        folders = current().folders
        if folders is None:
            raise RuntimeError("ui.PreviewImage needs the running node's folders (call it inside execute)")
        self.animated = animated
        self.values = image_file_helpers.save_images(image, _temp_prefix(), folders.temp_directory, "temp",
                                           compress_level=image_file_helpers.PREVIEW_COMPRESS_LEVEL)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """Show a B×H×W mask batch as grey images."""

    def __init__(self, mask: torch.Tensor, animated: bool = False, cls: Any = None, **_: Any) -> None:
        if mask.ndim == 2:
            mask = mask[None]
        super().__init__(mask.reshape(-1, mask.shape[-2], mask.shape[-1], 1).expand(-1, -1, -1, 3), animated, cls)


class PreviewText(_UIOutput):
    """Show a text under the node."""

    def __init__(self, value: str, **_: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


def ui_dict(ui: Any) -> dict[str, Any] | None:
    """A node's `ui` as the plain dict the executor records (helpers give their `as_dict()`)."""
    if ui is None:
        return None
    if isinstance(ui, _UIOutput) or (not isinstance(ui, dict) and callable(getattr(ui, "as_dict", None))):
        ui = ui.as_dict()
    # Tuples become lists, so merged list results and the history read as ComfyUI's JSON does.
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dict(ui).items()}
