"""The head's placement loop: takes prompts from the durable queue and places each on a worker.

`ClusterDispatcher` stands where the local `executor.worker.Worker` stands (`start`, `stop`,
`current`), so the server, the queue and history are the same code in both modes; it adds
`interrupt_prompt` (an interrupt reaches the worker running that prompt), `cluster_info` (GET
/loom/cluster, /system_stats) and applies `POST /free` on every worker.

Faults (why at most one retry): a prompt whose worker is lost is put back in the queue with its
number, so it runs next on another worker; what the lost attempt stored is deleted, so history
has one result and the outputs no duplicates. A prompt that loses a second worker fails with an
error saying so: a prompt that kills workers (out of memory, a crashing node) must not cycle
through the cluster.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from cluster import connect
from cluster.files import OutputStore
from cluster.routing import DEFAULT_AFFINITY_WAIT_S, PendingView, Router, prompt_models
from cluster.slot import SlotDeps, WorkerSlot, failed_result
from executor.queue import PromptQueue, QueueItem

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
POLL_S = 0.25


class ClusterDispatcher:
    """Places queued prompts on `workers` Ray actors (see the module docstring)."""

    def __init__(self, queue: PromptQueue, sink: Callable[[Any, str | None], None], *, folders: Any, config: Any,
                 workers: int, namespace: str = connect.NAMESPACE, kill_workers_on_stop: bool = False,
                 affinity_wait_s: float = DEFAULT_AFFINITY_WAIT_S) -> None:
        self.queue = queue
        self.sink = sink
        self.router = Router(affinity_wait_s)
        self.kill_workers_on_stop = kill_workers_on_stop
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._models_of: dict[str, frozenset[str]] = {}
        self._thread: threading.Thread | None = None
        deps = SlotDeps(queue=queue, sink=sink, store=OutputStore(folders), folders=folders, config=config,
                        actor_cls=connect.actor_class(), namespace=namespace, on_idle=self._wake.set,
                        on_lost=self._lost)
        self.slots = [WorkerSlot(i, deps) for i in range(workers)]

    # ---- the Worker interface ---------------------------------------------------------------

    @property
    def current(self) -> QueueItem | None:
        """One running prompt (the local worker's attribute; several may run)."""
        return next((s.current for s in self.slots if s.current is not None), None)

    def start(self) -> None:
        previous = self.queue.on_change

        def changed() -> None:
            if previous is not None:
                previous()
            self._wake.set()
        self.queue.on_change = changed
        for slot in self.slots:
            slot.start()
        self._thread = threading.Thread(target=self._loop, name="loom-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop placing prompts, interrupt the running ones and wait a while for their history.
        The actors stay (a restarted head re-attaches) unless `kill_workers_on_stop`."""
        self._stop.set()
        self._wake.set()
        self.interrupt_prompt(None)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            slot.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(timeout)
        if self.kill_workers_on_stop:
            for slot in self.slots:
                connect.kill(slot.actor)

    # ---- cluster-only -----------------------------------------------------------------------

    def interrupt_prompt(self, prompt_id: str | None) -> None:
        """Interrupt `prompt_id` on the worker that runs it (every running prompt for None)."""
        for slot in self.slots:
            item = slot.current
            if item is not None and (prompt_id is None or item.prompt_id == prompt_id):
                slot.actor.interrupt.remote(item.prompt_id)

    def cluster_info(self) -> dict[str, Any]:
        """GET /loom/cluster: `{"workers": [{id, node, pid, device, state, prompt_id, models}]}`."""
        return {"workers": [slot.public() for slot in self.slots]}

    # ---- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._apply_flags()
            if self._place_one():
                continue
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _place_one(self) -> bool:
        """Place the next prompt the routing policy picks; False when there is none to place."""
        with self._lock:
            live = [s for s in self.slots if s.state in ("idle", "busy")]
            pending = [PendingView(i.prompt_id, self._models(i)) for i in self.queue.pending()]
            choice = self.router.choose([s.view() for s in live], pending, time.monotonic())
            if choice is None:
                return False
            worker_id, prompt_id = choice
            item = self.queue.take(prompt_id)
            if item is None:
                return True
            slot = next(s for s in live if s.view().id == worker_id)
            slot.run(item, self._models_of.pop(prompt_id, frozenset()))
        return True

    def _models(self, item: QueueItem) -> frozenset[str]:
        models = self._models_of.get(item.prompt_id)
        if models is None:
            models = self._models_of[item.prompt_id] = prompt_models(item.prompt)
        return models

    def _apply_flags(self) -> None:
        """POST /free: every worker unloads/frees, each between its prompts."""
        flags = self.queue.take_flags()
        if not flags:
            return
        unload, free = bool(flags.get("unload_models")), bool(flags.get("free_memory"))
        for slot in self.slots:
            if slot.state in ("idle", "busy"):
                slot.actor.free.remote(unload, free)
                if unload:
                    slot.models = frozenset()

    def _lost(self, slot: WorkerSlot, item: QueueItem, reason: str) -> None:
        """A worker died under `item`: re-queue it once, else fail it with a clear error."""
        slot.deps.store.discard(item.prompt_id)
        attempts = self._attempts[item.prompt_id] = self._attempts.get(item.prompt_id, 0) + 1
        if attempts < MAX_ATTEMPTS and not self._stop.is_set():
            log.warning("%s while running prompt %s: re-queued to run on another worker", reason, item.prompt_id)
            self.queue.requeue(item)
            return
        self._attempts.pop(item.prompt_id, None)
        message = (f"prompt {item.prompt_id} was not retried: {attempts} workers were lost while running it "
                   f"(last: {reason}). A prompt that kills workers (out of memory? a crashing node?) is failed "
                   f"rather than sent around the cluster.")
        log.error("%s", message)
        slot.write_result(item, failed_result(item, message))
