"""Routes of the prompt queue: POST/GET /prompt, GET/POST /queue, POST /interrupt, POST /free,
GET/POST /history, GET /history/{id}.

Each handler translates HTTP to calls on `executor.queue.PromptQueue` and `executor.validate`;
validation runs before anything is queued (400 with ComfyUI's `error`/`node_errors` body).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

from aiohttp import web

from executor.validate import validate_prompt
from server.http import BadRequest, int_query, json_response, json_response_off_loop, read_json
from server.keys import QUEUE, RUNTIME, WORKER
from server.prompt_server_compat import on_prompt


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
    body = on_prompt(request.app, await read_json(request))  # packs' add_on_prompt_handler handlers
    prompt, prompt_id, extra, number, front, targets = _submission(body)
    runtime = request.app[RUNTIME]
    queue = request.app[QUEUE]
    known = queue.find(prompt_id)
    if known is not None or queue.history_item(prompt_id) is not None:
        num, _ = queue.put(prompt_id, prompt, extra, [], number=number)
        return json_response({"prompt_id": prompt_id, "number": _num(num), "node_errors": {}})
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(
        None, lambda: validate_prompt(prompt, runtime.registry, getattr(runtime, "folders", None), targets))
    if not result.ok:
        return json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
    num, _ = queue.put(prompt_id, result.prompt or prompt, extra, list(result.outputs), number=number, front=front)
    return json_response({"prompt_id": prompt_id, "number": _num(num), "node_errors": result.node_errors})


def _num(number: float) -> float | int:
    return int(number) if float(number).is_integer() else number


async def get_prompt(request: web.Request) -> web.Response:
    return json_response(queue_info(request.app[QUEUE]))


async def get_queue(request: web.Request) -> web.Response:
    queue = request.app[QUEUE]
    return await json_response_off_loop(lambda: {"queue_running": [i.as_list() for i in queue.running()],
                                                 "queue_pending": [i.as_list() for i in queue.pending()]})


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
    _clear_or_delete(await read_json(request), queue.clear_pending, queue.delete_pending)
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
    return await json_response_off_loop(lambda: queue.history(max_items, offset if offset is not None else -1))


async def get_history_item(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    queue = request.app[QUEUE]

    def item() -> dict[str, Any]:
        entry = queue.history_item(prompt_id)
        return {} if entry is None else {prompt_id: entry}
    return await json_response_off_loop(item)


async def post_history(request: web.Request) -> web.Response:
    """`{"clear": true}` wipes history; `{"delete": [ids]}` removes entries."""
    queue = request.app[QUEUE]
    _clear_or_delete(await read_json(request), queue.clear_history, queue.delete_history)
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
