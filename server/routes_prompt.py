"""Routes of the prompt queue: POST/GET /prompt, GET/POST /queue, POST /interrupt, POST /free,
GET/POST /history, GET /history/{id}.

Each handler translates HTTP to calls on `executor.queue.PromptQueue` and `executor.submission`
(the one parser of submitted prompts); validation runs before anything is queued (400 with
ComfyUI's `error`/`node_errors` body).
"""
from __future__ import annotations

import asyncio
import json
from contextlib import nullcontext
from typing import Any, Callable

from aiohttp import web

from executor.submission import SubmissionError, read_submission, validate_submission
from server.http import (BadRequest, gc_paused, int_query, json_response, json_response_off_loop, read_json,
                         text_response_off_loop)
from server.keys import QUEUE, RUNTIME, WORKER
from server.prompt_server_compat import on_prompt


_BIG_PROMPT_NODES = 1000


def queue_info(queue: Any) -> dict[str, Any]:
    """ComfyUI's `status` payload: `{"exec_info": {"queue_remaining": N}}` (running included)."""
    return {"exec_info": {"queue_remaining": queue.remaining()}}


async def post_prompt(request: web.Request) -> web.Response:
    """Validate and queue a prompt (`executor.submission`): `{prompt_id, number, node_errors}`, or
    400 with ComfyUI's `error`/`node_errors` body. An id already queued or run is not queued again."""
    body = on_prompt(request.app, await read_json(request))  # packs' add_on_prompt_handler handlers
    runtime = request.app[RUNTIME]
    queue = request.app[QUEUE]
    try:
        prompt_id, num, node_errors = await asyncio.to_thread(_admit, queue, runtime, body)
    except SubmissionError as refused:
        return await json_response_off_loop(refused.response, status=400)
    return json_response({"prompt_id": prompt_id, "number": _num(num), "node_errors": node_errors})


def _admit(queue: Any, runtime: Any, body: Any) -> tuple[str, float, dict[str, Any]]:
    """Read, validate and queue a submission on a worker thread: the queue's file is only touched off the event
    loop (a big prompt being stored holds the queue's lock), and for a big prompt validation copies the nodes and
    storing encodes megabytes, with the collector paused (see gc_paused). Returns (prompt id, number, node
    errors); raises SubmissionError when refused."""
    prompt = body.get("prompt") if isinstance(body, dict) else None
    with gc_paused() if isinstance(prompt, dict) and len(prompt) > _BIG_PROMPT_NODES else nullcontext():
        draft = read_submission(body, runtime.registry)
        if queue.contains(draft.prompt_id):  # an id already queued or run is not queued again
            num, _ = queue.put(draft.prompt_id, draft.prompt, draft.extra_data, [], number=draft.number)
            return draft.prompt_id, num, {}
        checked = validate_submission(draft, runtime.registry, runtime.folders)
        num, _ = queue.put(checked.prompt_id, checked.prompt, checked.extra_data, checked.outputs,
                           number=checked.number, front=checked.front)
    return checked.prompt_id, num, checked.node_errors


def _num(number: float) -> float | int:
    return int(number) if float(number).is_integer() else number


async def get_prompt(request: web.Request) -> web.Response:
    return json_response(queue_info(request.app[QUEUE]))


async def get_queue(request: web.Request) -> web.Response:
    """ComfyUI's answer holds every queued prompt: spliced from their stored JSON texts (nothing re-encoded)."""
    queue = request.app[QUEUE]
    return await text_response_off_loop(queue.queue_text)


def _clear_or_delete(body: dict, clear: Callable[[], object], delete: Callable[[list], object]) -> None:
    """ComfyUI's `{"clear": true}` / `{"delete": [ids]}` body of POST /queue and POST /history."""
    if body.get("clear"):
        clear()
    if "delete" in body:
        ids = body["delete"]
        if not isinstance(ids, list):
            raise BadRequest("'delete' must be a list of prompt ids")
        delete(ids)


async def post_queue(request: web.Request) -> web.Response:
    """`{"clear": true}` empties the pending queue; `{"delete": [ids]}` removes some."""
    queue = request.app[QUEUE]
    body = await read_json(request)
    await asyncio.to_thread(_clear_or_delete, body, queue.clear_pending, queue.delete_pending)
    return web.Response(status=200)


def interrupt(app: web.Application, prompt_id: str | None) -> str:
    """Stop `prompt_id` (or whatever runs): "interrupted", "removed" (was pending) or "not_found"."""
    queue = app[QUEUE]
    running = queue.running()
    if prompt_id is None:
        if running:
            _interrupt_running(app, None)
            return "interrupted"
        return "not_found"
    found = queue.find(prompt_id)
    if found is None:
        return "not_found"
    state, _ = found
    if state == "pending":
        queue.delete_pending([prompt_id])
        return "removed"
    _interrupt_running(app, prompt_id)
    return "interrupted"


def _interrupt_running(app: web.Application, prompt_id: str | None) -> None:
    """A worker that runs several prompts at once (cluster/) is told which one; else the flag."""
    by_prompt = getattr(app[WORKER], "interrupt_prompt", None)
    if by_prompt is not None:
        by_prompt(prompt_id)
    else:
        app[RUNTIME].interrupt.set()


async def post_interrupt(request: web.Request) -> web.Response:
    """Interrupt the running prompt, or the given `prompt_id` (a pending one is removed)."""
    body = await read_json(request, allow_empty=True)
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise BadRequest("'prompt_id' must be a string")
    interrupt(request.app, prompt_id)
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    """`{"unload_models": bool, "free_memory": bool}`: done by the worker between prompts."""
    body = await read_json(request, allow_empty=True)
    queue = request.app[QUEUE]
    for flag in ("unload_models", "free_memory"):
        if body.get(flag):
            queue.set_flag(flag, True)
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    max_items = int_query(request, "max_items", None, minimum=0)
    offset = int_query(request, "offset", -1)
    queue = request.app[QUEUE]
    return await text_response_off_loop(lambda: queue.history_text(max_items, offset if offset is not None else -1))


async def get_history_item(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    queue = request.app[QUEUE]

    def item() -> str:
        entry = queue.history_item_text(prompt_id)
        return "{}" if entry is None else f"{{{json.dumps(prompt_id)}: {entry}}}"
    return await text_response_off_loop(item)


async def post_history(request: web.Request) -> web.Response:
    """`{"clear": true}` wipes history; `{"delete": [ids]}` removes entries."""
    queue = request.app[QUEUE]
    body = await read_json(request)
    await asyncio.to_thread(_clear_or_delete, body, queue.clear_history, queue.delete_history)
    return web.Response(status=200)


def current_prompt(app: web.Application) -> str | None:
    """The id of the prompt the worker is running, if any."""
    item = app[WORKER].current
    return None if item is None else item.prompt_id


ROUTES = [
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
]
