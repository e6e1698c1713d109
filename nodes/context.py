"""What a running node may reach: its identity, progress reporting, interrupt checks, the model
manager and the folders — handed in by the executor, never imported from it.

The executor sets the context around each node call (`running(ctx)`); node code reads it with
`current()`. Nodes call `ctx.models.use(...)` to have weights placed for them: the placement
policy itself lives in `executor/memory.py` alone.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence

import threading


class Interrupted(Exception):
    """Raised inside a node when the user interrupted the prompt."""


class InterruptFlag:
    """A thread-safe interrupt request, set by the server and checked by the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Interrupted` if an interrupt was requested."""
        if self._event.is_set():
            raise Interrupted("interrupted by the user")


class ModelFilesLike(Protocol):
    """The part of `executor.memory_files.ModelFileCache` that loaders use: live modules kept per file."""

    def get_or_load(self, path: Any, load: Callable[[], Any], dtype: Any = None, part: str = "") -> Any: ...

    def get_or_load_parts(self, path: Any, parts: Sequence[str], load: Callable[[], dict[str, Any]],
                          dtype: Any = None) -> dict[str, Any]: ...


class ModelManagerLike(Protocol):
    """Everything of `executor.memory.ModelManager` that nodes and the compat layer use."""

    files: ModelFilesLike

    def use(self, handles: Sequence[Any], working_memory: int = 0) -> ContextManager[None]: ...

    def retry_on_oom(self, fn: Callable[[], Any], fallback: Callable[[], Any] | None = None) -> Any: ...

    def base_weight(self, module: Any, key: str) -> Any: ...

    def unload_all(self) -> int: ...

    def free(self, unload_models: bool = True, free_memory: bool = True) -> dict[str, Any]: ...

    def dtype_for(self, component: str) -> Any: ...

    def weight_dtype_for(self, component: str, requested: str = "default", file_dtype: Any = None) -> Any: ...

    @property
    def compute_device(self) -> Any: ...

    @property
    def intermediate_device(self) -> Any: ...


class FoldersLike(Protocol):
    """The part of `folders.Folders` that nodes use."""

    def list_files(self, kind: str) -> list[str]: ...

    def full_path(self, kind: str, name: str) -> Path: ...

    def folder_paths(self, kind: str) -> list[Path]: ...

    @property
    def input_directory(self) -> Path: ...

    @property
    def output_directory(self) -> Path: ...

    @property
    def temp_directory(self) -> Path: ...


ProgressSink = Callable[[int, int, Any], None]


@dataclass
class NodeContext:
    """One node call's view of the run. `progress(value, total, preview)` reports a step;
    `preview` is an optional PIL image sent to the submitting client as a binary frame.

    The executor also sets a context (at least `folders`, see `hook_context`) around a node's
    class-level hooks — IS_CHANGED/`fingerprint` and VALIDATE_INPUTS/`validate` — because
    hooks such as LoadImage's read files.
    """

    prompt_id: str
    node_id: str
    class_type: str
    interrupt: InterruptFlag
    models: ModelManagerLike | None = None
    folders: FoldersLike | None = None
    on_progress: ProgressSink | None = None
    on_message: Callable[[str, dict[str, Any]], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # (node_id, value, total, preview): progress for a node of this prompt chosen by id
    # (ComfyAPI's `execution.set_progress(..., node_id=...)`); None reports nothing.
    on_node_progress: Callable[[str, float, float, Any], None] | None = None
    list_index: int | None = None

    def check_interrupted(self) -> None:
        self.interrupt.check()

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        self.interrupt.check()
        if self.on_progress is not None:
            self.on_progress(value, total, preview)

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Send a custom event to the submitting client (ComfyUI's `send_sync`)."""
        if self.on_message is not None:
            self.on_message(event, data)


_CURRENT: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar("loom_node_context", default=None)


def current() -> NodeContext:
    """The context of the node now running; raises RuntimeError outside a node call."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise RuntimeError("no node is running: node context is only available during execution")
    return ctx


def current_or_none() -> NodeContext | None:
    return _CURRENT.get()


@contextlib.contextmanager
def running(ctx: NodeContext) -> Iterator[NodeContext]:
    """Make `ctx` the current node context for the duration of a node call."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def hook_context(node_id: str, class_type: str, *, folders: FoldersLike | None = None,
                 models: ModelManagerLike | None = None, interrupt: InterruptFlag | None = None,
                 prompt_id: str = "") -> ContextManager[NodeContext]:
    """The context to call a node's IS_CHANGED/`fingerprint` or VALIDATE_INPUTS/`validate`
    hook in (during planning or validation, before the node runs)."""
    return running(NodeContext(prompt_id=prompt_id, node_id=node_id, class_type=class_type,
                               interrupt=interrupt if interrupt is not None else InterruptFlag(),
                               models=models, folders=folders))
