"""The one worker thread: takes the next prompt from the durable queue, runs it, stores history.

Owns the life of a prompt after it is queued: clearing the interrupt flag before it starts,
calling `Executor.execute` on this thread (so GPU work never runs on the server's event loop),
forwarding every event to a sink given by the server together with the submitting client's id,
recording file-writing outputs as they happen (`PromptQueue.record_output`) so a prompt re-run
after a crash skips output nodes that already wrote (no second set of files, one history entry),
writing the history entry, and only then sending `executing` with `node: null` — so a client
that reads `/history/{id}` on that message always finds the entry (ComfyUI's order too).
Also carries out the `/free` requests (unload models, free memory) between prompts.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable

from executor.events import Event, PreviewImage
from executor.queue import PromptQueue, QueueClosed, QueueItem

log = logging.getLogger(__name__)

# (event or preview, client id or None) -> None; must be cheap and must not block.
WorkerSink = Callable[[Any, str | None], None]
_HISTORY_EVENTS = ("execution_start", "execution_cached", "execution_success", "execution_error",
                   "execution_interrupted")


class Worker:
    """Runs queued prompts one at a time on its own daemon thread.

    `executor` is anything with `execute(prompt, prompt_id, *, extra_data, outputs_to_execute,
    emit, converted)` returning an object with `status`, `outputs`, `messages`, `meta`, `error`
    (queued prompts come validated, their constants converted: `converted=True`).
    """

    def __init__(self, queue: PromptQueue, executor: Any, sink: WorkerSink, *, interrupt: Any = None,
                 models: Any = None, cache: Any = None) -> None:
        self.queue = queue
        self.executor = executor
        self.sink = sink
        self.interrupt = interrupt
        self.models = models
        self.cache = cache
        self.current: QueueItem | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="loom-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after the current prompt (interrupting it) and wait a while."""
        self._stop.set()
        if self.interrupt is not None and self.current is not None:
            self.interrupt.set()
        with self.queue._cond:
            self.queue._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Cleared before the prompt is marked running, so an interrupt that arrives as soon
            # as it shows in /queue is never lost.
            if self.interrupt is not None:
                self.interrupt.clear()
            try:
                item = self.queue.get(timeout=0.5)
            except QueueClosed:
                return
            self._apply_flags()
            if item is None:
                continue
            if self._stop.is_set():
                return
            self.run_one(item)

    def run_one(self, item: QueueItem) -> dict[str, Any]:
        """Run one prompt to completion and store its history entry (returned)."""
        self.current = item
        client_id = item.client_id
        collected: list[list[Any]] = []

        def emit(event: Any) -> None:
            if isinstance(event, Event):
                if event.type == "executing" and event.data.get("node") is None:
                    return  # sent by us once history is stored
                if event.type in _HISTORY_EVENTS:
                    collected.append([event.type, dict(event.data)])
                if event.type == "executed":
                    self._record(item, event.data)
            try:
                self.sink(event, client_id)
            except Exception:  # a broken sink must not kill the prompt
                log.exception("event sink failed")

        started = time.time()
        outputs, meta, status = self._execute(item, emit, collected)
        try:
            entry = self.queue.task_done(item, outputs, status, meta)
        finally:
            self.current = None
        log.info("prompt %s %s in %.2f s", item.prompt_id, status["status_str"], time.time() - started)
        self.sink(Event("executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id}), client_id)
        return entry

    def _record(self, item: QueueItem, data: Any) -> None:
        """Persist an `executed` output that names files, before anything else can happen."""
        node, output = data.get("node"), data.get("output")
        if isinstance(node, str) and isinstance(output, dict) and writes_files(output):
            try:
                self.queue.record_output(item.prompt_id, node, output)
            except Exception:
                log.exception("could not record the outputs of node %s", node)

    def _execute(self, item: QueueItem, emit: Callable[[Any], None],
                 collected: list[list[Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Call the executor; turn its result (or a crash of the executor itself) into history parts.
        Output nodes whose files an interrupted earlier run already wrote are not run again."""
        recorded = self.queue.recorded_outputs(item.prompt_id)
        targets = [n for n in item.outputs_to_execute if n not in recorded]
        if recorded and item.outputs_to_execute and not targets:
            log.info("prompt %s: every output was written before a restart; reusing them", item.prompt_id)
            for kind in ("execution_start", "execution_cached", "execution_success"):
                data: dict[str, Any] = {"prompt_id": item.prompt_id, "timestamp": int(time.time() * 1000)}
                if kind == "execution_cached":
                    data["nodes"] = sorted(recorded)
                emit(Event(kind, data))
            return dict(recorded), {}, {"status_str": "success", "completed": True, "messages": collected}
        if recorded and targets:
            log.info("prompt %s: reusing outputs of %s written before a restart", item.prompt_id, sorted(recorded))
        try:
            result = self.executor.execute(item.prompt, item.prompt_id, extra_data=item.extra_data,
                                           outputs_to_execute=targets if recorded and targets else
                                           item.outputs_to_execute, emit=emit, converted=True)
        except Exception as exc:  # the executor promises not to raise; stay alive if it does
            log.exception("executor failed on prompt %s", item.prompt_id)
            data = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
                    "exception_message": str(exc), "exception_type": type(exc).__name__,
                    "traceback": traceback.format_exception(exc), "current_inputs": {}, "current_outputs": {},
                    "timestamp": int(time.time() * 1000)}
            emit(Event("execution_error", data))
            return dict(recorded), {}, {"status_str": "error", "completed": False, "messages": collected}
        messages = [list(m) for m in (getattr(result, "messages", None) or [])] or collected
        ok = getattr(result, "status", "error") == "success"
        status = {"status_str": "success" if ok else "error", "completed": ok, "messages": messages}
        outputs = {**recorded, **dict(getattr(result, "outputs", {}) or {})}
        return outputs, dict(getattr(result, "meta", {}) or {}), status

    def _apply_flags(self) -> None:
        """Carry out `/free` requests: unload models from the device (the model manager's
        `free`), drop the executor's node objects and cached outputs."""
        flags = self.queue.take_flags()
        if not flags:
            return
        unload, free = bool(flags.get("unload_models")), bool(flags.get("free_memory"))
        if unload and hasattr(self.executor, "forget_instances"):
            self.executor.forget_instances()
        if free and self.cache is not None and hasattr(self.cache, "clear"):
            self.cache.clear()
        if self.models is None:
            return
        if hasattr(self.models, "free"):
            self.models.free(unload_models=unload, free_memory=free)
        elif unload:
            _call_first(self.models, ("unload_all", "unload_all_models", "unload_models"))


def writes_files(output: dict[str, Any]) -> bool:
    """True for a ui output naming saved files (`images`/`audio`/`video`... entries with a filename)."""
    return any(isinstance(value, list) and any(isinstance(v, dict) and "filename" in v for v in value)
               for value in output.values())


def _call_first(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        fn = getattr(obj, name, None)
        if callable(fn):
            try:
                fn()
            except TypeError:
                continue
            return
    log.warning("model manager %s has none of %s", type(obj).__name__, ", ".join(names))


__all__ = ["Worker", "WorkerSink", "PreviewImage"]
