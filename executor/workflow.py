"""Workflow documents: the API format (pydantic), format detection, and loading files.

The API format is ComfyUI's `{"<id>": {"class_type", "inputs", "_meta"}}` (what `POST /prompt`
sends); the UI format (the editor's document, versions 0.4 and 1.0) is modelled and converted
to API form in `executor/workflow_ui.py`. `load_workflow_file` accepts API JSON, UI JSON, a
`POST /prompt` body, or a PNG carrying ComfyUI's `prompt`/`workflow` tEXt chunks. A malformed
document raises `WorkflowError` whose `path` points into the JSON (`$.nodes[3].inputs`), never
a traceback from deep inside.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from executor.workflow_errors import WorkflowError, from_validation_error, json_path
from executor.workflow_ui import ui_to_api

__all__ = ["WorkflowError", "from_validation_error", "json_path", "parse_api", "is_ui_workflow", "load_workflow",
           "load_workflow_file", "read_png_chunks"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ApiNode(BaseModel):
    """One node of an API prompt."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_type: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] | None = Field(default=None, alias="_meta")


_API = TypeAdapter(dict[str, ApiNode])


def parse_api(obj: Any) -> dict[str, Any]:
    """Check an API prompt's structure and return it as plain dicts with string node ids and
    `[str id, int slot]` links (other keys of a node are kept); raises `WorkflowError` at the offending path."""
    if not isinstance(obj, dict):
        raise WorkflowError(f"an API prompt must be a JSON object of nodes, not {type(obj).__name__}")
    try:
        nodes = _API.validate_python({str(k): v for k, v in obj.items()})
    except ValidationError as error:
        raise from_validation_error(error) from None
    prompt: dict[str, Any] = {}
    for node_id, node in nodes.items():
        inputs = {name: _normalise_link(value) for name, value in node.inputs.items()}
        entry: dict[str, Any] = {**(node.model_extra or {}), "class_type": node.class_type, "inputs": inputs}
        if node.meta is not None:
            entry["_meta"] = node.meta
        prompt[node_id] = entry
    return prompt


def _normalise_link(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int) and not isinstance(value[0], bool) \
            and isinstance(value[1], int) and not isinstance(value[1], bool):
        return [str(value[0]), value[1]]
    return value


def is_ui_workflow(obj: Any) -> bool:
    """True for the editor's document (a `nodes` list), False for an API prompt."""
    return isinstance(obj, dict) and isinstance(obj.get("nodes"), list)


def read_png_chunks(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (ComfyUI stores `prompt` and `workflow` there)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            text = dict(getattr(image, "text", {}) or {})
            info = {k: v for k, v in image.info.items() if isinstance(v, str)}
    except (OSError, UnidentifiedImageError) as error:
        raise WorkflowError(f"cannot read the PNG {path}: {error}") from None
    return {**info, **text}


def _load_json_text(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise WorkflowError(f"invalid JSON in {source} at line {error.lineno} column {error.colno}: {error.msg}") \
            from None


def load_workflow(obj: Any, registry: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`(api_prompt, ui_workflow or None)` from a parsed document: an API prompt, a UI
    workflow (converted), or a `POST /prompt` body (`{"prompt": ..., "extra_data": ...}`)."""
    if is_ui_workflow(obj):
        return ui_to_api(obj, registry), obj
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), dict) and "class_type" not in obj["prompt"]:
        extra = obj.get("extra_data") if isinstance(obj.get("extra_data"), dict) else {}
        workflow = (extra.get("extra_pnginfo") or {}).get("workflow") if isinstance(extra, dict) else None
        try:
            prompt = parse_api(obj["prompt"])
        except WorkflowError as error:
            raise WorkflowError(error.reason, error.path.replace("$", "$.prompt", 1)) from None
        return prompt, workflow if isinstance(workflow, dict) else None
    return parse_api(obj), None


def load_workflow_file(path: str | Path, registry: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read a workflow file: API JSON, UI JSON, a `POST /prompt` body, or a PNG with an
    embedded `prompt` (preferred, it is exactly what ran) or `workflow`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WorkflowError(f"cannot read {path}: {error.strerror or error}") from None
    if data.startswith(PNG_SIGNATURE):
        chunks = read_png_chunks(path)
        workflow = _load_json_text(chunks["workflow"], f"{path} (workflow chunk)") if "workflow" in chunks else None
        if "prompt" in chunks:
            prompt = parse_api(_load_json_text(chunks["prompt"], f"{path} (prompt chunk)"))
            return prompt, workflow if isinstance(workflow, dict) else None
        if isinstance(workflow, dict):
            return load_workflow(workflow, registry)
        raise WorkflowError(f"the PNG {path} carries no 'prompt' or 'workflow' text chunk")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkflowError(f"{path} is neither UTF-8 JSON nor a PNG") from None
    return load_workflow(_load_json_text(text, str(path)), registry)
