"""The evaluation loop: runs a validated API prompt node by node, with caching, lazy inputs,
list mapping, interrupts and ComfyUI's events.

`Executor` lives as long as the process: it holds the output cache and one node instance per
node id (ComfyUI keeps node objects between prompts the same way). `Executor.execute` runs on
the calling thread (the server's one worker thread, or the headless runner) and never raises
for a node's exception: it reports it as `execution_error` and returns an `ExecutionResult`.
One prompt's run (scheduling, lazy inputs, async nodes, blockers, node expansion) is
`executor/prompt_run.py`: signatures are computed once per node in topological order
(`executor/cache.py`), the `Scheduler` of `executor/plan.py` pulls in only what the outputs
need, and each node call is wrapped in `nodes.context.running(NodeContext(...))` so nodes can
report progress and check the interrupt flag.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Coroutine, Literal, Mapping

from executor import events as ev
from executor.cache import OutputCache
from executor.prompt_run import PromptRun
from nodes.context import FoldersLike, InterruptFlag, ModelManagerLike
from nodes.spec import NodeSpec

log = logging.getLogger(__name__)

Status = Literal["success", "error", "interrupted"]


@dataclass
class ExecutionResult:
    """What a prompt run produced: `outputs` maps node ids to their ui dicts (history's
    `outputs`), `messages` the status messages (`[type, data]`, history's `status.messages`),
    `meta` ComfyUI's per-output node metadata, `error` the `execution_error` data when failed."""

    status: Status
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None


class SpecLookup:
    """What the executor needs of the registry (duck-typed: `get(class_type)`)."""

    def get(self, class_type: str) -> NodeSpec | None: ...


class Executor:
    """Runs prompts against a registry; keeps the output cache and node instances between them."""

    def __init__(self, registry: Any, *, folders: FoldersLike | None = None, models: ModelManagerLike | None = None,
                 cache: OutputCache | None = None, interrupt: InterruptFlag | None = None,
                 announce_done: bool = True, node_options: Mapping[str, Any] | None = None) -> None:
        """`announce_done`: end each prompt with ComfyUI's `executing` event with `node: None`.
        The server's worker sends that itself once the history is stored (ComfyUI's order, which
        clients rely on before fetching /history), so the runtime turns it off here.
        `node_options`: run-wide settings nodes read from `NodeContext.extra` (e.g. the
        `preview_method` of the --preview-method flag); a prompt's extra_data can override them."""
        self.registry = registry
        self.node_options = dict(node_options or {})
        self.announce_done = announce_done
        self.folders = folders
        self.models = models
        self.cache = cache if cache is not None else OutputCache()
        self.interrupt = interrupt if interrupt is not None else InterruptFlag()
        self._instances: dict[str, tuple[str, Any]] = {}

    def execute(self, prompt: Mapping[str, Any], prompt_id: str, *, extra_data: Mapping[str, Any] | None = None,
                outputs_to_execute: list[str] | None = None, emit: ev.EventSink | None = None,
                converted: bool = False) -> ExecutionResult:
        """Run `prompt` (API format, validated) and report through `emit`; never raises for a
        node's exception. `outputs_to_execute` defaults to every output node of the prompt;
        `converted` says validation already converted its constants (a `Submission`'s prompt), so
        only the nodes of expansions are converted here.
        The run's coroutine gets an event loop of its own on this thread (on a helper thread
        when this thread already runs one), so async nodes never touch the server's loop."""
        result = ExecutionResult(status="success")
        run = PromptRun(self, prompt, prompt_id, dict(extra_data or {}), emit or ev.null_sink, result, converted)
        _run_coroutine(run.run(outputs_to_execute))
        if self.announce_done:
            run.emit(ev.Event(ev.EXECUTING, {"node": None, "prompt_id": prompt_id}))
        return result

    def instance(self, node_id: str, spec: NodeSpec) -> Any:
        """The node object for `node_id`, kept between prompts while its class stays the same."""
        held = self._instances.get(node_id)
        if held is not None and held[0] == spec.class_type:
            return held[1]
        obj = spec.instantiate()
        self._instances[node_id] = (spec.class_type, obj)
        return obj

    def forget_instances(self) -> None:
        """Drop the kept node objects (POST /free with `unload_models`)."""
        self._instances.clear()


def _run_coroutine(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as ex:  # handed back to the calling thread
            failure.append(ex)
    thread = threading.Thread(target=target, name="loom-prompt-run")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
