"""The worker actor: one Ray actor process owning a whole Loom runtime (executor, output cache,
model manager on its device), running the prompts the head sends it, one at a time.

`WorkerActor.run` is a streaming generator: it yields ("event", Event | PreviewImage, files)
as the executor emits (an `executed` event carries the files its node wrote) and finally
("done", outputs, meta, status, models). The executor runs on its own thread inside the actor
so that `interrupt` and `free` (other actor threads, `max_concurrency`) reach it mid-prompt.
The actor's folders are private (`<tmp>/loom-worker-<id>`) except the model folders, which are
the head's configured paths: every node must hold the models at those paths (or shared storage).
"""
from __future__ import annotations

import dataclasses
import os
import queue
import socket
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from cluster.files import FileBlob, collect_outputs, reset_worker_folders
from cluster.routing import prompt_models
from executor.events import Event

_HISTORY_EVENTS = ("execution_start", "execution_cached", "execution_success", "execution_error",
                   "execution_interrupted")
_DONE = object()


def worker_config(config: Any, worker_id: str) -> Any:
    """The head's Config with the worker's own input/output/temp/user folders; no cluster flags."""
    root = Path(tempfile.gettempdir()) / f"loom-worker-{worker_id}-{os.getpid()}"
    return dataclasses.replace(config, input_directory=root / "input", output_directory=root / "output",
                               temp_directory=root / "temp", user_directory=root / "user",
                               ray_address=None, ray_workers=None, command="serve")


class WorkerActor:
    """Wrapped with `ray.remote` by `cluster.pool`; every public method is an actor method."""

    def __init__(self, worker_id: str, config: Any) -> None:
        from runtime import build_runtime

        self.worker_id = worker_id
        # build_runtime gives torch one thread per core of the node, as a local run has: CPU
        # results depend on the thread count, and the same image as a local run is the promise.
        self.runtime = build_runtime(worker_config(config, worker_id))
        self._run_lock = threading.Lock()
        self._current: str | None = None
        self._cancelled: set[str] = set()
        self._models: list[str] = []
        self._node = _node_address()

    def info(self) -> dict[str, Any]:
        """This worker's entry of GET /loom/cluster (without `state`, which the head knows)."""
        device = self.runtime.models.compute_device
        return {"id": self.worker_id, "node": self._node, "pid": os.getpid(), "device": str(device),
                "prompt_id": self._current, "models": list(self._models)}

    def interrupt(self, prompt_id: str | None) -> None:
        """Stop `prompt_id` (or whatever runs): also when the call overtakes the start of `run`."""
        if prompt_id is not None and prompt_id != self._current:
            self._cancelled.add(prompt_id)
            return
        self.runtime.interrupt.set()

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """POST /free, applied between prompts (waits for the running one)."""
        with self._run_lock:
            if unload_models:
                self.runtime.executor.forget_instances()
                self._models.clear()
            if free_memory:
                self.runtime.cache.clear()
            self.runtime.models.free(unload_models=unload_models, free_memory=free_memory)

    def run(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
            outputs_to_execute: list[str], inputs: list[FileBlob]) -> Iterator[tuple[Any, ...]]:
        """Run one prompt, yielding its events as they happen, then its result."""
        # A run left over from a head that died holds the lock: stop it; the new head re-queued it.
        self.runtime.interrupt.set()
        with self._run_lock:
            self._current = prompt_id
            self.runtime.interrupt.clear()
            if prompt_id in self._cancelled:
                self.runtime.interrupt.set()
            try:
                reset_worker_folders(self.runtime.folders, inputs)
                yield from self._stream(prompt_id, prompt, extra_data, outputs_to_execute)
            finally:
                self._cancelled.discard(prompt_id)
                self._current = None

    def _stream(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                outputs_to_execute: list[str]) -> Iterator[tuple[Any, ...]]:
        events: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def execute() -> None:
            try:
                outcome["result"] = self.runtime.executor.execute(
                    prompt, prompt_id, extra_data=extra_data, outputs_to_execute=outputs_to_execute,
                    emit=events.put, converted=True)  # queued prompts come validated (executor/submission)
            except Exception as exc:  # the executor promises not to raise; report it if it does
                outcome["crash"] = exc
            finally:
                events.put(_DONE)

        thread = threading.Thread(target=execute, name=f"loom-run-{prompt_id}", daemon=True)
        thread.start()
        collected: list[list[Any]] = []
        while (event := events.get()) is not _DONE:
            files: list[FileBlob] = []
            if isinstance(event, Event):
                if event.type in _HISTORY_EVENTS:
                    collected.append([event.type, dict(event.data)])
                if event.type == "executed":
                    files = collect_outputs(event.data.get("output"), self.runtime.folders)
            yield ("event", event, files)
        thread.join()
        yield self._result(prompt_id, prompt, outcome, collected)

    def _result(self, prompt_id: str, prompt: dict[str, Any], outcome: dict[str, Any],
                collected: list[list[Any]]) -> tuple[Any, ...]:
        for name in sorted(prompt_models(prompt)):
            if name in self._models:
                self._models.remove(name)
            self._models.insert(0, name)
        if "crash" in outcome:
            exc = outcome["crash"]
            error = {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                     "exception_message": str(exc), "exception_type": type(exc).__name__,
                     "traceback": traceback.format_exception(exc), "current_inputs": {}, "current_outputs": {},
                     "timestamp": int(time.time() * 1000)}
            collected.append(["execution_error", error])
            return ("done", {}, {}, {"status_str": "error", "completed": False, "messages": collected},
                    list(self._models), Event("execution_error", error))
        result = outcome["result"]
        messages = [list(m) for m in (result.messages or [])] or collected
        ok = result.status == "success"
        status = {"status_str": "success" if ok else "error", "completed": ok, "messages": messages}
        return ("done", dict(result.outputs), dict(result.meta), status, list(self._models), None)


def _node_address() -> str:
    """The address this actor's Ray node was started with (127.0.0.1 for `local`)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return str(node.get("NodeManagerAddress"))
    return socket.gethostname()
