"""One worker as the head sees it: its actor, its state, and the thread that runs its prompt.

Owns the life of a prompt placed on a worker: sending it with its input files, relaying the
streamed events to the submitting client (after storing the files an `executed` event carries,
under the names a local run would use), writing history, and announcing the end with
`executing`/`node: null` after history is stored, as the local worker does. When the actor dies
(its process killed, its node lost) the slot reports the prompt lost to the dispatcher, which
re-queues it or fails it, and starts a replacement actor under the same name.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from cluster import connect
from cluster.files import OutputStore, gather_inputs
from cluster.routing import WorkerView
from executor.events import Event
from executor.queue import PromptQueue, QueueItem

log = logging.getLogger(__name__)

RESTART_ATTEMPTS = 5
READY_TIMEOUT_S = 300.0


class WorkerLost(Exception):
    """The actor running a prompt died or became unreachable."""


@dataclass
class SlotDeps:
    """What every slot shares with the dispatcher."""

    queue: PromptQueue
    sink: Callable[[Any, str | None], None]
    store: OutputStore
    folders: Any
    config: Any
    actor_cls: Any
    namespace: str
    on_idle: Callable[[], None]
    on_lost: Callable[["WorkerSlot", QueueItem, str], None]


class WorkerSlot:
    """State: "starting", "idle", "busy", "restarting" or "dead" (could not be restarted)."""

    def __init__(self, index: int, deps: SlotDeps) -> None:
        self.index = index
        self.deps = deps
        self.actor: Any = None
        self.state = "starting"
        self.current: QueueItem | None = None
        self.models: frozenset[str] = frozenset()
        self.loading: frozenset[str] = frozenset()
        self.prompts_run = 0
        self.info: dict[str, Any] = {"id": str(index), "node": None, "pid": None, "device": None,
                                     "prompt_id": None, "models": []}
        self._thread: threading.Thread | None = None

    # ---- life of the actor ------------------------------------------------------------------

    def start(self) -> None:
        """Create or re-attach the actor, in the background (a new actor builds a runtime)."""
        threading.Thread(target=self._attach, name=f"loom-slot-{self.index}", daemon=True).start()

    def _attach(self) -> None:
        import ray

        for attempt in range(RESTART_ATTEMPTS):
            self.actor = connect.spawn(self.deps.actor_cls, self.index, self.deps.config,
                                       namespace=self.deps.namespace)
            try:
                info = ray.get(self.actor.info.remote(), timeout=READY_TIMEOUT_S)
            except Exception as exc:  # a dead name not yet released, or a failing start
                log.warning("worker %s did not start (attempt %d): %s", self.index, attempt + 1, exc)
                connect.kill(self.actor)
                time.sleep(0.5 * (attempt + 1))
                continue
            self.info.update(info)
            self.models = frozenset(info.get("models") or ())
            self.state = "idle"
            log.info("worker %s ready: pid %s on %s (%s)", self.index, info["pid"], info["node"], info["device"])
            self.deps.on_idle()
            return
        self.state = "dead"
        log.error("worker %s could not be started after %d attempts", self.index, RESTART_ATTEMPTS)

    def restart(self) -> None:
        self.state = "restarting"
        connect.kill(self.actor)
        self.start()

    def view(self) -> WorkerView:
        """For routing, a busy worker already holds what its running prompt loads."""
        return WorkerView(str(self.index), self.state == "idle", self.models | self.loading, self.prompts_run)

    def public(self) -> dict[str, Any]:
        """This worker's entry of GET /loom/cluster."""
        item = self.current
        return {"id": self.info["id"], "node": self.info["node"], "pid": self.info["pid"],
                "device": self.info["device"], "state": self.state,
                "prompt_id": item.prompt_id if item is not None else None, "models": sorted(self.models)}

    # ---- running a prompt -------------------------------------------------------------------

    def run(self, item: QueueItem, models: frozenset[str] = frozenset()) -> None:
        """Start `item` (which loads `models`) on this worker's thread; busy until it is done."""
        self.state, self.current, self.loading = "busy", item, models
        self._thread = threading.Thread(target=self._run, args=(item,), name=f"loom-slot-{self.index}-run",
                                        daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, item: QueueItem) -> None:
        try:
            done = self._stream(item)
        except WorkerLost as exc:
            self.state, self.current, self.loading = "restarting", None, frozenset()
            self.deps.on_lost(self, item, str(exc))
            self.restart()
            return
        except Exception as exc:  # a failure of the call itself, not of a node: the prompt fails
            log.exception("worker %s failed on prompt %s", self.index, item.prompt_id)
            done = failed_result(item, f"{type(exc).__name__}: {exc}")
        self._finish(item, done)

    def _stream(self, item: QueueItem) -> tuple[Any, ...]:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        client_id = item.client_id
        inputs = gather_inputs(item.prompt, self.deps.folders)
        try:
            stream = self.actor.run.options(num_returns="streaming").remote(
                item.prompt_id, item.prompt, item.extra_data, item.outputs_to_execute, inputs)
            for ref in stream:
                message = ray.get(ref)
                if message[0] == "done":
                    return message
                self._relay(item, message[1], message[2], client_id)
        except (RayActorError, ActorUnavailableError) as exc:
            raise WorkerLost(f"worker {self.index} (pid {self.info['pid']}) was lost: {type(exc).__name__}") from exc
        raise WorkerLost(f"worker {self.index} ended prompt {item.prompt_id} without a result")

    def _relay(self, item: QueueItem, event: Any, files: list[Any], client_id: str | None) -> None:
        if isinstance(event, Event):
            if event.type == "executing" and event.data.get("node") is None:
                return  # sent once history is stored
            if event.type == "executed":
                self.deps.store.store(item.prompt_id, files)
                event = Event("executed", {**event.data,
                                           "output": self.deps.store.rewrite(item.prompt_id, event.data.get("output"))})
        self._send(event, client_id)

    def _send(self, event: Any, client_id: str | None) -> None:
        try:
            self.deps.sink(event, client_id)
        except Exception:  # a broken sink must not lose the prompt
            log.exception("event sink failed")

    def _finish(self, item: QueueItem, done: tuple[Any, ...]) -> None:
        self.write_result(item, done)
        self.models, self.loading = frozenset(done[4]), frozenset()
        self.prompts_run += 1
        self.current = None
        self.state = "idle"
        self.deps.on_idle()

    def write_result(self, item: QueueItem, done: tuple[Any, ...]) -> None:
        """Store history for a "done" message, then announce the end to the client."""
        _, outputs, meta, status, _models, crash_event = done
        store = self.deps.store
        if crash_event is not None:
            self._send(crash_event, item.client_id)
        outputs = {node: store.rewrite(item.prompt_id, ui) for node, ui in outputs.items()}
        try:
            self.deps.queue.task_done(item, outputs, status, meta)
        finally:
            store.forget(item.prompt_id)
        log.info("prompt %s %s on worker %s", item.prompt_id, status["status_str"], self.index)
        self._send(Event("executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id}),
                   item.client_id)


def failed_result(item: QueueItem, message: str) -> tuple[Any, ...]:
    """A "done" message for a prompt that could not run (the shape `WorkerActor.run` yields)."""
    error = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
             "exception_message": message, "exception_type": "WorkerError", "traceback": [],
             "current_inputs": {}, "current_outputs": {}, "timestamp": int(time.time() * 1000)}
    status = {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}
    return ("done", {}, {}, status, [], Event("execution_error", error))

