"""The jobs API that ComfyUI's current frontend polls: GET /jobs, GET /jobs/{id},
POST /jobs/{id}/cancel, POST /jobs/cancel `{"job_ids"}` (served under /api/ like every route).

A job is one prompt seen through one lens: `pending` and `in_progress` come from the queue,
`completed`, `failed` and `cancelled` (interrupted) from history. The list answer is `{"jobs": [...], "pagination":
{"offset", "limit", "total", "has_more"}}`; a job carries `id`, `status`, `priority` (the queue
number), `create_time` (ms), `outputs_count`, and for finished jobs `execution_start_time`,
`execution_end_time`, `execution_error`, `preview_output`; `previewable_outputs_count`; `GET /jobs/{id}` adds `outputs`,
`execution_status` and `workflow` ({prompt, extra_data}) for finished ones.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from executor.queue_summary import job_summary, pruned, sort_number
from executor.queue_summary import workflow_id as workflow_id_of
from server.http import BadRequest, int_query, json_response, json_response_off_loop, read_json, strict_dumps
from server.keys import QUEUE
from server.routes_prompt import interrupt

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def queued_job(entry: list[Any], status: str) -> dict[str, Any]:
    """A job from a 5-element queue entry."""
    number, prompt_id, _prompt, extra, _outs = entry
    return pruned({"id": prompt_id, "status": status, "priority": number, "create_time": extra.get("create_time", 0),
                   "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id_of(extra)})


def history_job(prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A job from a history entry (ComfyUI's shape), as listings show it."""
    return job_summary(prompt_id, entry).job


def _statuses(request: web.Request) -> list[str]:
    raw = request.query.get("status")
    if not raw:
        return list(STATUSES)
    wanted = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [s for s in wanted if s not in STATUSES]
    if bad:
        raise BadRequest(f"unknown job status {', '.join(bad)}; expected some of {', '.join(STATUSES)}")
    return wanted


def _sort_key(sort_by: str) -> Any:
    """The order of jobs; the same as `PromptQueue.history_jobs` orders the stored ones."""
    if sort_by == "execution_duration":
        def duration(job: dict[str, Any]) -> float:
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return (sort_number(end) - sort_number(start)) if start and end else 0.0
        return duration  # type: ignore[return-value]
    return lambda job: (sort_number(job.get("create_time")), sort_number(job.get("priority")))


async def get_jobs(request: web.Request) -> web.Response:
    """`?status=a,b&limit=&offset=&sort_by=created_at|execution_duration&sort_order=asc|desc&workflow_id=`."""
    wanted = _statuses(request)
    limit = int_query(request, "limit", None, minimum=0)
    offset = int_query(request, "offset", 0, minimum=0) or 0
    sort_by = request.query.get("sort_by", "created_at")
    order = request.query.get("sort_order", "desc")
    if sort_by not in ("created_at", "execution_duration") or order not in ("asc", "desc"):
        raise BadRequest("sort_by must be created_at or execution_duration; sort_order asc or desc")
    queue = request.app[QUEUE]
    workflow_id = request.query.get("workflow_id")
    return await json_response_off_loop(lambda: _jobs_page(queue, wanted, workflow_id, sort_by, order, offset, limit))


def _jobs_page(queue: Any, wanted: list[str], workflow_id: str | None, sort_by: str, order: str,
               offset: int, limit: int | None) -> dict[str, Any]:
    """The body of GET /api/jobs (runs on a worker thread). Finished jobs come from the stored
    summaries, only as many as the page needs (`offset + limit`), merged with the queued ones."""
    jobs: list[dict[str, Any]] = []
    if "in_progress" in wanted:
        jobs += [queued_job(i.as_list(), "in_progress") for i in queue.running()]
    if "pending" in wanted:
        jobs += [queued_job(i.as_list(), "pending") for i in queue.pending()]
    if workflow_id:
        jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
    finished, finished_total = queue.history_jobs(wanted, workflow_id or None, sort_by=sort_by,
                                                  descending=order == "desc",
                                                  first=None if limit is None else offset + limit)
    total = len(jobs) + finished_total
    jobs += finished
    jobs.sort(key=_sort_key(sort_by), reverse=order == "desc")
    page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
    # The frontend's schema wants a number for `limit`: without one, it is everything.
    return {"jobs": page, "pagination": {"offset": offset, "limit": total if limit is None else limit,
                                         "total": total, "has_more": offset + len(page) < total}}


def find_job_text(app: web.Application, job_id: str) -> str | None:
    """`GET /jobs/{id}`'s answer as JSON text: a finished job's summary with its outputs, status
    and workflow spliced in as SQLite picked them out of the stored entry (a 50 MB prompt is
    never parsed in Python); a queued job from the queue's mirror; None when unknown."""
    queue = app[QUEUE]
    parts = queue.history_job_parts(job_id)
    if parts is not None:
        job = (parts["job"] or "{}").rstrip()[:-1]
        def part(name: str, default: str) -> str:
            value = parts[name]
            return value if value not in (None, "null") else default
        return (f'{job}, "outputs": {part("outputs", "{}")}, "execution_status": {part("status", "{}")}, '
                f'"workflow": {{"prompt": {part("prompt", "null")}, "extra_data": {part("extra_data", "null")}}}}}')
    found = queue.find(job_id)
    if found is None:
        return None
    state, item = found
    return strict_dumps(queued_job(item.as_list(), "in_progress" if state == "running" else "pending"))


async def get_job(request: web.Request) -> web.Response:
    """One job; a finished one with its outputs and workflow (made on a worker thread)."""
    text = await asyncio.to_thread(find_job_text, request.app, request.match_info["job_id"])
    if text is None:
        return json_response({"error": {"type": "not_found", "message": "no job with this id"}}, status=404)
    return web.Response(text=text, content_type="application/json")


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a pending (removed) or running (interrupted) job; 409 for a finished one."""
    job_id = request.match_info["job_id"]
    outcome = interrupt(request.app, job_id)
    if outcome == "not_found":
        if await asyncio.to_thread(request.app[QUEUE].in_history, job_id):
            return json_response({"error": {"type": "already_finished",
                                                "message": "the job has already finished"}}, status=409)
        return json_response({"error": {"type": "not_found", "message": "no job with this id"}}, status=404)
    return json_response({"id": job_id, "status": "cancelled" if outcome == "removed" else "cancelling"})


async def cancel_jobs(request: web.Request) -> web.Response:
    """`{"job_ids": [...]}` (1 to 100): cancel each pending or running one; `{"cancelled": [...]}`."""
    body = await read_json(request)
    ids = body.get("job_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100 or not all(isinstance(i, str) for i in ids):
        raise BadRequest("'job_ids' must be a list of 1 to 100 job ids")
    cancelled = [job_id for job_id in ids if interrupt(request.app, job_id) != "not_found"]
    return json_response({"cancelled": cancelled})


ROUTES = [
    ("POST", "/jobs/cancel", cancel_jobs),
    ("GET", "/jobs", get_jobs),
    ("GET", "/jobs/{job_id}", get_job),
    ("POST", "/jobs/{job_id}/cancel", cancel_job),
]
