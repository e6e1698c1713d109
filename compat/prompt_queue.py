"""ComfyUI's `PromptQueue` (`server.PromptServer.instance.prompt_queue`, `execution.PromptQueue`) as a view of
Loom's durable queue (`executor.queue.PromptQueue`), for packs that list, add or remove queued prompts.

Items are ComfyUI's 5-element lists `[number, prompt_id, prompt, extra_data, outputs_to_execute]`. Taking prompts
to run (`get`, `task_done`) stays the worker's: the view has no `get`, so a pack cannot steal a prompt from it.
`put` queues without validating, as ComfyUI's does (the item should come from a validated prompt).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence


class ComfyPromptQueue:
    """ComfyUI's PromptQueue methods over one Loom queue (see the module docstring)."""

    def __init__(self, server: Any, queue: Any = None) -> None:
        self.server = server
        self._queue = queue

    def bind(self, queue: Any) -> None:
        self._queue = queue

    @property
    def queue_store(self) -> Any:
        if self._queue is None:
            raise RuntimeError("PromptServer.instance.prompt_queue: no server is running (headless run)")
        return self._queue

    def put(self, item: Sequence[Any]) -> None:
        """Queue `[number, prompt_id, prompt, extra_data, outputs_to_execute, ...]` (a lower number runs first)."""
        if len(item) < 5:
            raise ValueError("a PromptQueue item is [number, prompt_id, prompt, extra_data, outputs_to_execute]")
        number, prompt_id, prompt, extra_data, outputs = item[:5]
        self.queue_store.put(str(prompt_id), dict(prompt), dict(extra_data or {}), list(outputs or []),
                             number=float(number))

    def get_current_queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(running items, pending items in run order)."""
        store = self.queue_store
        return [i.as_list() for i in store.running()], [i.as_list() for i in store.pending()]

    get_current_queue_volatile = get_current_queue

    def get_tasks_remaining(self) -> int:
        """Pending plus running prompts."""
        return self.queue_store.remaining()

    def wipe_queue(self) -> None:
        """Remove every pending prompt (the running one keeps running)."""
        self.queue_store.clear_pending()

    def delete_queue_item(self, function: Callable[[list[Any]], bool]) -> bool:
        """Remove the first pending item for which `function(item)` is true; whether one was removed."""
        store = self.queue_store
        for item in store.pending():
            if function(item.as_list()):
                return bool(store.delete_pending([item.prompt_id]))
        return False

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1,
                    map_function: Callable[[dict], dict] | None = None) -> dict[str, Any]:
        """`{prompt_id: entry}`: one entry, or the newest `max_items` (from `offset`), oldest first."""
        store = self.queue_store
        if prompt_id is not None:
            entry = store.history_item(prompt_id)
            if entry is None:
                return {}
            return {prompt_id: map_function(entry) if map_function is not None else entry}
        entries = store.history(max_items, offset)
        if map_function is not None:
            entries = {k: map_function(v) for k, v in entries.items()}
        return entries

    def wipe_history(self) -> None:
        self.queue_store.clear_history()

    def delete_history_item(self, id_to_delete: str) -> None:
        self.queue_store.delete_history([id_to_delete])

    def set_flag(self, name: str, data: Any) -> None:
        """A flag for the worker between prompts ("unload_models", "free_memory"), as POST /free sets."""
        self.queue_store.set_flag(name, data)
