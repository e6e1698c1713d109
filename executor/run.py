"""The evaluation loop: runs a validated API prompt node by node, with caching, lazy inputs,
list mapping, interrupts and ComfyUI's events.

`Executor` lives as long as the process: it holds the output cache and one node instance per
node id (ComfyUI keeps node objects between prompts the same way). `Executor.execute` runs on
the calling thread (the server's one worker thread, or the headless runner) and never raises
for a node's exception: it reports it as `execution_error` and returns an `ExecutionResult`.
Per prompt: signatures are computed once in topological order (`executor/cache.py`), the
`Scheduler` of `executor/plan.py` pulls in only what the outputs need and is not cached, and
each node call is wrapped in `nodes.context.running(NodeContext(...))` so nodes can report
progress and check the interrupt flag.
"""
from __future__ import annotations

import inspect
import logging
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Literal, Mapping

from executor import events as ev
from executor.cache import CachedOutput, OutputCache, estimate_size, signatures_in_order
from executor.lists import call_count, map_calls, merge_outputs, slice_inputs
from executor.plan import CycleError, Scheduler, as_link, reachable, topological_order
from executor.validate_checks import coerce_constant
from nodes.context import (FoldersLike, InterruptFlag, Interrupted, ModelManagerLike, NodeContext, hook_context,
                           running)
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
                outputs_to_execute: list[str] | None = None, emit: ev.EventSink | None = None) -> ExecutionResult:
        """Run `prompt` (API format, validated) and report through `emit`; never raises for a
        node's exception. `outputs_to_execute` defaults to every output node of the prompt."""
        run = _Run(self, prompt, prompt_id, dict(extra_data or {}), emit or ev.null_sink)
        return run.execute(outputs_to_execute)

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


class _PromptFailure(Exception):
    """A problem found before any node ran (unknown class, cycle), blamed on one node."""

    def __init__(self, node_id: str, node_type: str, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.node_id, self.node_type, self.exception_type = node_id, node_type, exception_type


_HIDDEN_FROM_EXTRA = {"EXTRA_PNGINFO": "extra_pnginfo", "AUTH_TOKEN_COMFY_ORG": "auth_token_comfy_org",
                      "API_KEY_COMFY_ORG": "api_key_comfy_org"}


class _Run:
    """The state of one `execute` call."""

    def __init__(self, executor: Executor, prompt: Mapping[str, Any], prompt_id: str, extra_data: dict[str, Any],
                 emit: ev.EventSink) -> None:
        self.ex = executor
        self.prompt = prompt
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self._emit = emit
        self.work: dict[str, dict[str, Any]] = {}
        self.specs: dict[str, NodeSpec] = {}
        self.signatures: dict[str, str] = {}
        self.results: dict[str, CachedOutput] = {}
        self.executed: list[str] = []
        self.result = ExecutionResult(status="success")
        self._deps: dict[str, list[str]] = {}
        self._order: list[str] = []
        self._known: dict[str, NodeSpec | None] = {}
        self._readers: dict[str, int] | None = None

    # ---- events ---------------------------------------------------------------------------

    def emit(self, item: ev.Event | ev.PreviewImage) -> None:
        try:
            self._emit(item)
        except Exception:  # a broken client sink must not stop the prompt
            log.exception("event sink failed on %s", getattr(item, "type", "preview"))

    def status(self, kind: str, data: dict[str, Any]) -> None:
        """A status message: kept in the history's messages and sent to the client."""
        data = {**data, "timestamp": ev.timestamp_ms()}
        self.result.messages.append([kind, data])
        self.emit(ev.Event(kind, data))

    # ---- the run --------------------------------------------------------------------------

    def execute(self, outputs: list[str] | None) -> ExecutionResult:
        self.status(ev.EXECUTION_START, {"prompt_id": self.prompt_id})
        try:
            targets = self._prepare(outputs)
        except _PromptFailure as failure:
            self._fail(failure.node_id, failure.node_type, str(failure), failure.exception_type, [], {})
            return self._finish()
        cached = [n for n in self._order if self._cached_entry(n) is not None]
        self.status(ev.EXECUTION_CACHED, {"nodes": cached, "prompt_id": self.prompt_id})
        scheduler = Scheduler(self._strong_dependencies)
        for node_id in targets:
            scheduler.add(node_id)
        self._loop(scheduler)
        if self.result.status == "success":
            self.status(ev.EXECUTION_SUCCESS, {"prompt_id": self.prompt_id})
        return self._finish()

    def _finish(self) -> ExecutionResult:
        if self.ex.announce_done:
            self.emit(ev.Event(ev.EXECUTING, {"node": None, "prompt_id": self.prompt_id}))
        return self.result

    def _loop(self, scheduler: Scheduler) -> None:
        while True:
            node_id = scheduler.pop()
            if node_id is None:
                stuck = scheduler.stuck()
                if stuck:
                    self._fail(stuck[0], self.specs[stuck[0]].class_type, "Dependency cycle detected",
                               "executor.plan.CycleError", [], {})
                return
            if self.ex.interrupt.is_set() and node_id not in self.results:
                self._interrupted(node_id)
                return
            try:
                done = self._step(node_id, scheduler)
            except Interrupted:
                self._interrupted(node_id)
                return
            except _NodeFailure as failure:
                self._fail(node_id, self.specs[node_id].class_type, str(failure.cause),
                           _type_name(failure.cause), traceback.format_tb(failure.cause.__traceback__),
                           failure.inputs)
                return
            if done:
                scheduler.finish(node_id)
                self._release_sources(node_id)

    # ---- preparation: specs, working copy, order, signatures ------------------------------

    def _prepare(self, outputs: list[str] | None) -> list[str]:
        prompt = self.prompt
        if outputs is None:
            outputs = [n for n, node in prompt.items() if getattr(self._spec_or_none(node), "output_node", False)]
        targets = [str(o) for o in outputs if str(o) in prompt]
        links: dict[str, Any] = {}
        nodes = reachable(prompt, targets, links)
        for node_id in nodes:
            node = prompt[node_id]
            spec = self._spec_or_none(node)
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if spec is None:
                raise _PromptFailure(node_id, str(class_type), f"Node class '{class_type}' is not registered",
                                     "executor.run.UnknownNodeError")
            self.specs[node_id] = spec
            self.work[node_id] = {"class_type": spec.class_type, "inputs": _coerced_inputs(spec, node)}
        try:
            self._order = topological_order(self.work, nodes, links)
        except CycleError as cycle:
            first = cycle.nodes[0]
            raise _PromptFailure(first, self.specs[first].class_type, f"Dependency cycle detected: {cycle}",
                                 "executor.plan.CycleError") from None
        changed = {n: self._is_changed(n) for n in self._order if self.specs[n].is_changed is not None}
        not_idempotent = [n for n in self._order if self.specs[n].not_idempotent]
        self.signatures = signatures_in_order(self.work, self._order, changed, not_idempotent)
        return targets

    def _spec_or_none(self, node: Any) -> NodeSpec | None:
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            return None
        class_type = node["class_type"]
        if class_type not in self._known:
            self._known[class_type] = self.ex.registry.get(class_type)
        return self._known[class_type]

    def _is_changed(self, node_id: str) -> Any:
        """The node's IS_CHANGED value from its constant inputs; NaN (always rerun) if it raises."""
        spec = self.specs[node_id]
        constants = {k: v for k, v in self.work[node_id]["inputs"].items() if as_link(v) is None}
        try:
            with hook_context(node_id, spec.class_type, folders=self.ex.folders, models=self.ex.models,
                              interrupt=self.ex.interrupt, prompt_id=self.prompt_id):
                return spec.is_changed(**_accepted(spec.is_changed, constants))  # type: ignore[misc]
        except Exception as ex:  # node code: report and rerun rather than fail the prompt
            log.warning("IS_CHANGED of node %s (%s) failed: %s", node_id, spec.class_type, ex)
            return float("nan")

    # ---- scheduling helpers ---------------------------------------------------------------

    def _release_sources(self, node_id: str) -> None:
        """With the cache off (`--cache-none`), drop an output once every node reading it is
        done, so a long graph does not hold all its intermediate images and latents."""
        if self.ex.cache.enabled:
            return
        if self._readers is None:
            self._readers = {}
            for consumer, node in self.work.items():
                for value in node["inputs"].values():
                    link = as_link(value)
                    if link is not None:
                        self._readers[link[0]] = self._readers.get(link[0], 0) + 1
        for value in self.work[node_id]["inputs"].values():
            link = as_link(value)
            if link is None or link[0] not in self._readers:
                continue
            self._readers[link[0]] -= 1
            if self._readers[link[0]] == 0:
                self.results.pop(link[0], None)

    def _cached_entry(self, node_id: str) -> CachedOutput | None:
        entry = self.results.get(node_id)
        if entry is None:
            entry = self.ex.cache.get(self.signatures[node_id])
            if entry is not None:
                self.results[node_id] = entry  # pinned for this run, whatever the cache evicts
        return entry

    def _strong_dependencies(self, node_id: str) -> list[str]:
        """What must finish before `node_id`: its non-lazy linked sources, nothing when cached."""
        deps = self._deps.get(node_id)
        if deps is None:
            deps = []
            if self._cached_entry(node_id) is None:
                spec = self.specs[node_id]
                for name, value in self.work[node_id]["inputs"].items():
                    link = as_link(value)
                    ispec = spec.input(name)
                    if link is not None and link[0] in self.work and not (ispec is not None and ispec.lazy):
                        deps.append(link[0])
            self._deps[node_id] = deps
        return deps

    # ---- one node -------------------------------------------------------------------------

    def _step(self, node_id: str, scheduler: Scheduler) -> bool:
        """Run (or reuse) one ready node; False when it must first wait for lazy inputs."""
        spec = self.specs[node_id]
        entry = self._cached_entry(node_id)
        if entry is not None:
            self._record(node_id, entry)
            return True
        inputs: dict[str, list[Any]] = {}
        try:
            inputs, pending = self._gather(node_id, spec)
            if pending:
                wanted = self._lazy_wanted(node_id, spec, inputs, pending)
                sources = [pending[name] for name in wanted if name in pending]
                if sources:
                    scheduler.block(node_id, sources)
                    return False
            self.emit(ev.Event(ev.EXECUTING, {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}))
            values, ui = self._call(node_id, spec, inputs)
        except Interrupted:
            raise
        except Exception as ex:  # the node's own code failed: reported, never propagated
            raise _NodeFailure(ex, inputs) from ex
        entry = CachedOutput(values=values, ui=ui, size=sum(estimate_size(v) for v in values))
        self.results[node_id] = entry
        self.ex.cache.put(self.signatures[node_id], entry)
        self._record(node_id, entry)
        return True

    def _record(self, node_id: str, entry: CachedOutput) -> None:
        """Note a finished node; send its ui output (cached ones too, as ComfyUI does)."""
        self.executed.append(node_id)
        if entry.ui is None:
            return
        self.result.outputs[node_id] = entry.ui
        self.result.meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                     "real_node_id": node_id}
        self.emit(ev.Event(ev.EXECUTED, {"node": node_id, "display_node": node_id, "output": entry.ui,
                                         "prompt_id": self.prompt_id}))

    def _gather(self, node_id: str, spec: NodeSpec) -> tuple[dict[str, list[Any]], dict[str, str]]:
        """The node's inputs as lists (see `executor/lists.py`), and the lazy inputs whose
        source has not run yet (name → source node id; passed as None meanwhile)."""
        inputs: dict[str, list[Any]] = {}
        pending: dict[str, str] = {}
        for name, value in self.work[node_id]["inputs"].items():
            link = as_link(value)
            if link is None:
                if spec.input(name) is not None:
                    inputs[name] = [value]
                continue
            source, slot = link
            entry = self.results.get(source)
            if entry is None:
                pending[name] = source
                inputs[name] = [None]
            elif slot < len(entry.values):
                inputs[name] = entry.values[slot]
            else:
                raise IndexError(f"input '{name}' links to output {slot} of node {source}, which has "
                                 f"{len(entry.values)} output(s)")
        for ispec in spec.inputs:
            if ispec.hidden:
                inputs[ispec.name] = [self._hidden_value(node_id, ispec.hidden)]
        return inputs, pending

    def _hidden_value(self, node_id: str, kind: str) -> Any:
        if kind == "UNIQUE_ID":
            return node_id
        if kind in ("PROMPT", "DYNPROMPT"):
            return self.prompt
        return self.extra_data.get(_HIDDEN_FROM_EXTRA.get(kind, ""))

    def _lazy_wanted(self, node_id: str, spec: NodeSpec, inputs: dict[str, list[Any]],
                     pending: dict[str, str]) -> list[str]:
        """Ask `check_lazy_status` which unevaluated lazy inputs it needs (all of them when the
        node has no such hook)."""
        if spec.check_lazy_status is None:
            return list(pending)
        obj = self.ex.instance(node_id, spec)
        wanted: list[str] = []
        for index in range(call_count(spec, inputs)):
            kwargs = _accepted(spec.check_lazy_status, slice_inputs(spec, inputs, index))
            wanted.extend(n for n in spec.lazy_status(obj, **kwargs) if n not in wanted)
        return wanted

    def _call(self, node_id: str, spec: NodeSpec, inputs: dict[str, list[Any]]
              ) -> tuple[tuple[list[Any], ...], dict[str, Any] | None]:
        """Call the node's function once per list element, inside its NodeContext."""
        obj = self.ex.instance(node_id, spec)
        func = getattr(obj, spec.function_name)
        ctx = NodeContext(prompt_id=self.prompt_id, node_id=node_id, class_type=spec.class_type,
                          interrupt=self.ex.interrupt, models=self.ex.models, folders=self.ex.folders,
                          on_progress=lambda value, total, preview=None: self._progress(node_id, value, total, preview),
                          on_message=lambda kind, data: self.emit(ev.Event(kind, data)),
                          extra={**self.ex.node_options, "prompt": self.prompt, "extra_data": self.extra_data})
        with running(ctx):
            results = map_calls(spec, func, inputs, between=self.ex.interrupt.check)
        return merge_outputs(spec, results)

    def _progress(self, node_id: str, value: int, total: int, preview: Any) -> None:
        self.emit(ev.Event(ev.PROGRESS, {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}))
        if preview is not None:
            frame = ev.encode_preview(self.prompt_id, node_id, preview)
            if frame is not None:
                self.emit(frame)

    # ---- endings --------------------------------------------------------------------------

    def _fail(self, node_id: str, node_type: str, message: str, exception_type: str, tb: list[str],
              inputs: Mapping[str, list[Any]]) -> None:
        error = {"prompt_id": self.prompt_id, "node_id": node_id, "node_type": node_type,
                 "executed": list(self.executed), "exception_message": message, "exception_type": exception_type,
                 "traceback": tb, "current_inputs": _format_inputs(inputs),
                 "current_outputs": list(self.results)}
        self.result.status = "error"
        self.result.error = error
        self.status(ev.EXECUTION_ERROR, error)

    def _interrupted(self, node_id: str) -> None:
        self.ex.interrupt.clear()
        self.result.status = "interrupted"
        self.status(ev.EXECUTION_INTERRUPTED, {"prompt_id": self.prompt_id, "node_id": node_id,
                                               "node_type": self.specs[node_id].class_type,
                                               "executed": list(self.executed)})


class _NodeFailure(Exception):
    """A node raised; carries the original exception and the inputs it was given."""

    def __init__(self, cause: Exception, inputs: Mapping[str, list[Any]]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.inputs = inputs


def _coerced_inputs(spec: NodeSpec, node: Mapping[str, Any]) -> dict[str, Any]:
    """The node's inputs with constants converted as validation converts them."""
    inputs = dict(node.get("inputs") or {})
    for name, value in inputs.items():
        ispec = spec.input(name)
        if ispec is not None and as_link(value) is None:
            inputs[name] = coerce_constant(ispec, value)[0]
    return inputs


@lru_cache(maxsize=1024)
def _parameters(func: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return frozenset(), True
    names = frozenset(n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def _accepted(func: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments `func` can take (all of them when it has `**kwargs`)."""
    try:
        names, has_kwargs = _parameters(func)
    except TypeError:  # unhashable callable
        return dict(kwargs)
    return dict(kwargs) if has_kwargs else {k: v for k, v in kwargs.items() if k in names}


def _type_name(ex: BaseException) -> str:
    kind = type(ex)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _format_inputs(inputs: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """ComfyUI's `current_inputs`: primitives as they are, anything else as text."""
    def show(value: Any) -> Any:
        if value is None or isinstance(value, (int, float, bool, str)):
            return value
        return str(value)[:1000]
    return {name: [show(v) for v in values] for name, values in inputs.items() if isinstance(values, list)}
