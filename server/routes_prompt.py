"""Routes of the prompt queue: POST/GET /prompt, GET/POST /queue, POST /interrupt, POST /free,
GET/POST /history, GET /history/{id}.

Each handler translates HTTP to calls on `executor.queue.PromptQueue` and `executor.validate`;
validation runs before anything is queued (400 with ComfyUI's `error`/`node_errors` body).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import nullcontext
from typing import Any, Callable

from aiohttp import web

from executor.validate import validate_prompt
from server.http import (BadRequest, gc_paused, int_query, json_response, json_response_off_loop, read_json,
                         text_response_off_loop)
from server.keys import QUEUE, RUNTIME, WORKER


_BIG_PROMPT_NODES = 1000


def queue_info(queue: Any) -> dict[str, Any]:
    """ComfyUI's `status` payload: `{"exec_info": {"queue_remaining": N}}` (running included)."""
    return {"exec_info": {"queue_remaining": queue.remaining()}}


def _invalid(message: str, details: str = "") -> web.Response:
    return json_response({"error": {"type": "invalid_prompt", "message": message, "details": details,
                                        "extra_info": {}}, "node_errors": {}}, status=400)


def _submission(body: dict[str, Any]) -> tuple[dict, str, dict, float | None, bool, list | None]:
    """Check the fields of a POST /prompt body; raise BadRequest naming the bad one."""
    prompt = body.get("prompt")
    if not isinstance(prompt, dict):
        raise BadRequest("'prompt' must be a JSON object mapping node ids to nodes", "invalid_prompt")
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    if not isinstance(prompt_id, str) or len(prompt_id) > 256:
        raise BadRequest("'prompt_id' must be a string of at most 256 characters", "invalid_prompt")
    extra = body.get("extra_data") or {}
    if not isinstance(extra, dict):
        raise BadRequest("'extra_data' must be a JSON object", "invalid_prompt")
    extra = dict(extra)
    client_id = body.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str):
            raise BadRequest("'client_id' must be a string", "invalid_prompt")
        extra["client_id"] = client_id
    extra.setdefault("create_time", int(time.time() * 1000))
    number = body.get("number")
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, (int, float, str)):
            raise BadRequest("'number' must be a number", "invalid_prompt")
        try:
            number = float(number)
        except ValueError:
            raise BadRequest("'number' must be a number", "invalid_prompt") from None
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
        raise BadRequest("'partial_execution_targets' must be a list of node ids", "invalid_prompt")
    return prompt, prompt_id, extra, number, bool(body.get("front")), targets


async def post_prompt(request: web.Request) -> web.Response:
    """Validate and queue a prompt: `{prompt_id, number, node_errors}`, or 400."""
    body = await read_json(request)
    prompt, prompt_id, extra, number, front, targets = _submission(body)
    runtime = request.app[RUNTIME]
    queue = request.app[QUEUE]
    # The queue's file is only touched on worker threads: a big prompt being stored meanwhile
    # holds the queue's lock, and the event loop must not wait for it.
    if await asyncio.to_thread(queue.contains, prompt_id):
        num, _ = await asyncio.to_thread(queue.put, prompt_id, prompt, extra, [], number=number)
        return json_response({"prompt_id": prompt_id, "number": _num(num), "node_errors": {}})
    result, num = await asyncio.to_thread(_admit, queue, runtime, prompt_id, prompt, extra, number, front, targets)
    if not result.ok:
        return await json_response_off_loop(lambda: {"error": result.error, "node_errors": result.node_errors},
                                            status=400)
    return json_response({"prompt_id": prompt_id, "number": _num(num), "node_errors": result.node_errors})


def _admit(queue: Any, runtime: Any, prompt_id: str, prompt: dict[str, Any], extra: dict[str, Any],
           number: float | None, front: bool, targets: list | None) -> tuple[Any, float]:
    """Validate, and queue when valid (on a worker thread: storing encodes megabytes for a big
    prompt). Validation copies the nodes and storing encodes them: for a big prompt, with the
    collector paused (see gc_paused). Returns (validation result, number)."""
    with gc_paused() if len(prompt) > _BIG_PROMPT_NODES else nullcontext():
        result = validate_prompt(prompt, runtime.registry, getattr(runtime, "folders", None), targets)
        if not result.ok:
            return result, 0.0
        num, _ = queue.put(prompt_id, result.prompt or prompt, extra, list(result.outputs), number=number,
                           front=front)
    return result, num


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
