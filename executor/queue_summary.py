"""The small summary of a finished prompt that job listings need, and strict JSON text.

Owns: `job_summary(prompt_id, entry)`, the job (ComfyUI's jobs API shape: `id`, `status`
completed | failed | cancelled, `priority`, `create_time`, `execution_start_time`,
`execution_end_time`, `execution_error`, `outputs_count`, `previewable_outputs_count`,
`preview_output`, `workflow_id`) picked out of a history entry, plus the values listings sort and
filter on. The queue stores it beside each history entry when the prompt finishes, so a page of
`/api/jobs` reads a few small rows instead of parsing every stored prompt. `strict_json_text`
is the JSON text the queue stores (strict: a non-finite float becomes `null`), so stored text
can be spliced into responses as it is. `SUMMARY_VERSION` names the summary's shape: stored
summaries of another version are rebuilt when the queue opens.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

SUMMARY_VERSION = "1"
PREVIEWABLE = frozenset({"images", "video", "audio"})
_END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


@dataclass(frozen=True)
class JobSummary:
    """A finished prompt as listings see it: the job dict and the columns they sort and filter by."""

    job: dict[str, Any]
    state: str
    number: float
    create_time: float
    duration: float
    workflow_id: str | None


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(child) for child in value]
    return value


_STRICT = json.JSONEncoder(allow_nan=False)  # json.dumps(allow_nan=False) would build one per call


def strict_json_text(value: Any) -> str:
    """JSON text every strict parser accepts (NaN/Infinity become null); `json.dumps`'s format."""
    try:
        return _STRICT.encode(value)
    except ValueError:
        return _STRICT.encode(_finite(value))


def sort_number(value: Any) -> float:
    """A value as listings sort it: a finite number, anything else 0 (as a missing one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def workflow_id(extra: dict[str, Any]) -> Any:
    """The UI workflow's `id` saved in `extra_data.extra_pnginfo.workflow`, if any."""
    info = extra.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


def pruned(job: dict[str, Any]) -> dict[str, Any]:
    """A job without its None fields (ComfyUI leaves them out)."""
    return {k: v for k, v in job.items() if v is not None}


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """How many output items there are, how many can be previewed, and the first previewable
    one (type "output" first)."""
    count, previewable, best, fallback = 0, 0, None, None
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, dict):
            continue
        for media, items in node_out.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                previewable += media in PREVIEWABLE
                if media in PREVIEWABLE and best is None:
                    candidate = {**item, "nodeId": node_id, "mediaType": media}
                    if item.get("type") == "output":
                        best = candidate
                    elif fallback is None:
                        fallback = candidate
    return count, previewable, best or fallback


def _run_times(status: dict[str, Any]) -> tuple[Any, Any, Any, str]:
    """(start, end, error data, state) read from the status messages."""
    start = end = error = None
    state = "failed" if status.get("status_str") == "error" else "completed"
    for message in status.get("messages") or []:
        if not (isinstance(message, list) and len(message) >= 2 and isinstance(message[1], dict)):
            continue
        name, data = message[0], message[1]
        if name == "execution_start":
            start = data.get("timestamp")
        elif name in _END_EVENTS:
            end = data.get("timestamp")
            if name == "execution_error":
                error = data
            elif name == "execution_interrupted":
                state = "cancelled"
    return start, end, error, state


def job_summary(prompt_id: str, entry: dict[str, Any]) -> JobSummary:
    """The summary of a history entry (`{"prompt": [...5], "outputs", "status", "meta"}`)."""
    prompt = entry.get("prompt")
    number, extra = (prompt[0], prompt[3]) if isinstance(prompt, list) and len(prompt) >= 4 else (0, {})
    extra = extra if isinstance(extra, dict) else {}
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
    start, end, error, state = _run_times(status)
    count, previewable, preview = outputs_summary(outputs)
    job = pruned({"id": prompt_id, "status": state, "priority": number,
                  "create_time": extra.get("create_time", 0), "execution_start_time": start,
                  "execution_end_time": end, "execution_error": error, "outputs_count": count,
                  "previewable_outputs_count": previewable,
                  "preview_output": preview, "workflow_id": workflow_id(extra)})
    duration = (sort_number(end) - sort_number(start)) if start and end else 0.0
    wid = job.get("workflow_id")
    return JobSummary(job, state, sort_number(number), sort_number(job.get("create_time")), sort_number(duration),
                      wid if isinstance(wid, str) else None)
