"""One submission path: a `POST /prompt` body turned into a validated `Submission`.

`read_submission(body, registry)` checks the fields of the body (`prompt` in API or UI format,
`prompt_id`, `client_id`, `extra_data`, `number`, `front`, `partial_execution_targets`) and parses
the prompt (the pydantic API model of `executor/workflow.py`; a UI workflow is converted and kept
as `extra_data.extra_pnginfo.workflow`); `validate_submission` runs `executor.validate`, which
converts the constants (the only conversion: the run takes them as they are). `parse_submission`
does both. The server's `POST /prompt` (also what the cluster head serves) and `main.py run` all
come through here; a body that cannot be queued raises `SubmissionError` carrying ComfyUI's
400 body (`{"error": {type, message, details, extra_info}, "node_errors": {...}}`).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from executor.validate import SpecLookup, validate_prompt
from executor.workflow import WorkflowError, is_ui_workflow, parse_api
from executor.workflow_ui import ui_to_api
from nodes.spec import FileIndex

MAX_PROMPT_ID = 256


class SubmissionError(ValueError):
    """A body that cannot be queued; `response()` is the HTTP 400 body ComfyUI sends."""

    def __init__(self, error: Mapping[str, Any], node_errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(str(error.get("message", "invalid prompt")))
        self.error = dict(error)
        self.node_errors = dict(node_errors or {})

    def response(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


def _invalid(message: str, details: str = "") -> SubmissionError:
    return SubmissionError({"type": "invalid_prompt", "message": message, "details": details, "extra_info": {}})


@dataclass(frozen=True)
class Submission:
    """A prompt ready to queue. Until `validate_submission`, `validated` is False, `outputs` and
    `node_errors` are empty and `prompt` holds its constants as sent."""

    prompt: dict[str, Any]
    prompt_id: str
    extra_data: dict[str, Any]
    number: float | None = None
    front: bool = False
    partial_targets: list[str] | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)
    validated: bool = False

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")


def _prompt(value: Any, registry: SpecLookup, extra: dict[str, Any]) -> dict[str, Any]:
    """The API prompt of the body's `prompt` (a UI workflow is converted and kept in `extra`)."""
    if not isinstance(value, dict):
        raise _invalid("'prompt' must be a JSON object mapping node ids to nodes", f"got {type(value).__name__}")
    try:
        if is_ui_workflow(value):
            pnginfo = extra.setdefault("extra_pnginfo", {})
            if isinstance(pnginfo, dict):
                pnginfo.setdefault("workflow", value)
            return ui_to_api(value, registry)
        return parse_api(value)
    except WorkflowError as error:
        raise _invalid(f"'prompt' is not a valid workflow: {error.reason}", error.path) from None


def _extra_data(body: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    extra = body.get("extra_data") or {}
    if not isinstance(extra, dict):
        raise _invalid("'extra_data' must be a JSON object")
    extra = dict(extra)
    client_id = body.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str):
            raise _invalid("'client_id' must be a string")
        extra["client_id"] = client_id
    extra.setdefault("create_time", now_ms)
    return extra


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _invalid("'number' must be a number")
    try:
        return float(value)
    except ValueError:
        raise _invalid("'number' must be a number") from None


def _targets(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _invalid("'partial_execution_targets' must be a list of node ids")
    return list(value)


def read_submission(body: Any, registry: SpecLookup, *, now_ms: int | None = None) -> Submission:
    """The fields of a `POST /prompt` body, checked, with the prompt parsed (not yet validated).
    Raises `SubmissionError` naming the bad field."""
    if not isinstance(body, Mapping):
        raise _invalid("the request body must be a JSON object with a 'prompt'")
    if not isinstance(body.get("prompt"), dict):
        raise _invalid("'prompt' must be a JSON object mapping node ids to nodes",
                       f"got {type(body.get('prompt')).__name__}")
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    if not isinstance(prompt_id, str) or len(prompt_id) > MAX_PROMPT_ID:
        raise _invalid(f"'prompt_id' must be a string of at most {MAX_PROMPT_ID} characters")
    extra = _extra_data(body, int(time.time() * 1000) if now_ms is None else now_ms)
    number = _number(body.get("number"))
    targets = _targets(body.get("partial_execution_targets"))
    prompt = _prompt(body.get("prompt"), registry, extra)
    return Submission(prompt=prompt, prompt_id=prompt_id, extra_data=extra, number=number,
                      front=bool(body.get("front")), partial_targets=targets)


def validate_submission(draft: Submission, registry: SpecLookup, files: FileIndex | None = None) -> Submission:
    """`draft` validated: constants converted, the output nodes to run, node errors of outputs
    that were left out; raises `SubmissionError` (ComfyUI's error and node_errors) when nothing can run."""
    result = validate_prompt(draft.prompt, registry, files, draft.partial_targets)
    if not result.ok:
        raise SubmissionError(result.error or {}, result.node_errors)
    return replace(draft, prompt=result.prompt or draft.prompt, outputs=list(result.outputs),
                   node_errors=dict(result.node_errors), validated=True)


def parse_submission(body: Any, registry: SpecLookup, files: FileIndex | None = None) -> Submission:
    """`read_submission` then `validate_submission`."""
    return validate_submission(read_submission(body, registry), registry, files)
