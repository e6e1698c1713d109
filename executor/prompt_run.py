"""One prompt's run: the scheduling loop, lazy inputs, async nodes, blockers and expansion.

`PromptRun.run()` is a coroutine executed on an event loop private to the executing thread
(the server's worker thread or the headless runner; never the server's loop). Ready nodes are
taken from the `Scheduler` one at a time; a sync node runs to completion in place, an async
node's call becomes a task and the node waits off the ready list until its tasks finish, so
async nodes that do not depend on one another overlap. When nothing is ready and tasks are
running, the loop waits for the first to finish (checking the interrupt flag meanwhile).

Node ids in events follow ComfyUI: `node` is the node's own id (an expanded node's ephemeral
id), `display_node` the submitted node the frontend shows it on; an error names the real node.
What nodes return is interpreted in `executor/node_call.py`; splicing expansions in is
`executor/expand.py`.
"""
from __future__ import annotations

import asyncio
import logging
import traceback
from typing import TYPE_CHECKING, Any, Mapping

from executor import events as ev
from executor.cache import CachedOutput, estimate_size, is_plain, node_signature
from executor.dynamic import DynamicGraph
from executor.expand import ExpansionError, Expansion, splice
from executor.lists import call_count, slice_inputs
from executor.node_call import CallResult, accepted as _accepted, call_hook, classify, invoke
from executor.plan import CycleError, Scheduler, as_link, reachable, topological_order
from executor.progress_state import ProgressState
from executor.validate_checks import coerce_constant
from nodes.context import Interrupted, NodeContext, running
from nodes.graph_builder import ExecutionBlocker
from nodes.spec import NodeSpec

if TYPE_CHECKING:
    from executor.run import Executor, ExecutionResult

log = logging.getLogger(__name__)

_HIDDEN_FROM_EXTRA = {"EXTRA_PNGINFO": "extra_pnginfo", "AUTH_TOKEN_COMFY_ORG": "auth_token_comfy_org",
                      "API_KEY_COMFY_ORG": "api_key_comfy_org"}
_WAIT_S = 0.05  # how often the interrupt flag is checked while only async tasks are running


class PromptFailure(Exception):
    """A problem found before a node could run (unknown class, cycle), blamed on one node."""

    def __init__(self, node_id: str, node_type: str, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.node_id, self.node_type, self.exception_type = node_id, node_type, exception_type


class NodeFailure(Exception):
    """A node raised; carries the original exception and the inputs it was given."""

    def __init__(self, cause: BaseException, inputs: Mapping[str, list[Any]]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.inputs = inputs


class PromptRun:
    """The state of one `Executor.execute` call."""

    def __init__(self, executor: Executor, prompt: Mapping[str, Any], prompt_id: str, extra_data: dict[str, Any],
                 emit: ev.EventSink, result: ExecutionResult, converted: bool = False) -> None:
        self.ex = executor
        self.prompt = prompt
        self.converted = converted  # the prompt's constants were converted by validation (executor/submission)
        self.graph = DynamicGraph(prompt)
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self._emit = emit
        self.result = result
        self.work: dict[str, dict[str, Any]] = {}
        self.specs: dict[str, NodeSpec] = {}
        self.signatures: dict[str, str] = {}
        self.results: dict[str, CachedOutput] = {}
        self.executed: list[str] = []
        self.progress = ProgressState(prompt_id, self.graph, self.emit)
        self._deps: dict[str, list[str]] = {}
        self._known: dict[str, NodeSpec | None] = {}
        self._readers: dict[str, int] = {}
        self._async: dict[str, list[Any]] = {}       # node id -> per-call returns, some still tasks
        self._expansions: dict[str, Expansion] = {}  # node id -> its spliced-in graphs, to resolve
        self._instances: dict[str, Any] = {}         # ephemeral nodes' objects (this run only)
        self._extra_sources: dict[str, list[str]] = {}  # node id -> nodes its expansion read
        # Nodes fed live objects by an expansion (and what depends on them): their signatures
        # are unique to this run, so their outputs are not put in the cache to linger there.
        self._single_use: set[str] = set()

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

    def display(self, node_id: str) -> str:
        return self.graph.get_display_node_id(node_id)

    # ---- the run --------------------------------------------------------------------------

    async def run(self, outputs: list[str] | None) -> None:
        self.status(ev.EXECUTION_START, {"prompt_id": self.prompt_id})
        try:
            targets = await self._prepare(outputs)
        except PromptFailure as failure:
            self._fail(failure.node_id, failure.node_type, str(failure), failure.exception_type, [], {})
            return
        cached = [n for n in self.work if self._cached_entry(n) is not None]
        self.status(ev.EXECUTION_CACHED, {"nodes": cached, "prompt_id": self.prompt_id})
        scheduler = Scheduler(self._strong_dependencies)
        for node_id in targets:
            scheduler.add(node_id)
        try:
            await self._loop(scheduler)
        finally:
            self._cancel_tasks()
            self.progress.flush()
        if self.result.status == "success":
            self.status(ev.EXECUTION_SUCCESS, {"prompt_id": self.prompt_id})

    async def _loop(self, scheduler: Scheduler) -> None:
        while True:
            node_id = scheduler.pop()
            if node_id is None:
                if self._async:
                    if not await self._wait_for_tasks(scheduler):
                        return
                    continue
                stuck = scheduler.stuck()
                if stuck:
                    self._fail_at(stuck[0], "Dependency cycle detected", "executor.plan.CycleError", [], {})
                return
            if self.ex.interrupt.is_set() and node_id not in self.results:
                self._interrupted(node_id)
                return
            try:
                done = await self._step(node_id, scheduler)
            except Interrupted:
                self._interrupted(node_id)
                return
            except NodeFailure as failure:
                self.progress.error(node_id)
                cause = failure.cause
                self._fail_at(node_id, str(cause), _type_name(cause), traceback.format_tb(cause.__traceback__),
                              failure.inputs)
                return
            if done:
                scheduler.finish(node_id)
                self._release_sources(node_id)

    async def _wait_for_tasks(self, scheduler: Scheduler) -> bool:
        """Wait until some async node's tasks are all done and requeue it; False when interrupted."""
        while True:
            if self.ex.interrupt.is_set():
                self._interrupted(next(iter(self._async)))
                return False
            for node_id, returns in list(self._async.items()):
                if all(r.done() for r in returns if isinstance(r, asyncio.Future)):
                    scheduler.requeue(node_id)
                    return True
            running_tasks = [r for rs in self._async.values() for r in rs
                             if isinstance(r, asyncio.Future) and not r.done()]
            await asyncio.wait(running_tasks, timeout=_WAIT_S, return_when=asyncio.FIRST_COMPLETED)

    def _cancel_tasks(self) -> None:
        for returns in self._async.values():
            for item in returns:
                if isinstance(item, asyncio.Future) and not item.done():
                    item.cancel()
        self._async.clear()

    # ---- preparation: specs, working copy, order, signatures ------------------------------

    async def _prepare(self, outputs: list[str] | None) -> list[str]:
        if outputs is None:
            outputs = [n for n, node in self.prompt.items() if getattr(self._spec_or_none(node), "output_node", False)]
        targets = [str(o) for o in outputs if str(o) in self.prompt]
        await self.prepare_nodes(targets)
        return targets

    async def prepare_nodes(self, roots: list[str]) -> None:
        """Add what `roots` need (and is not yet prepared) to the run: spec, coerced inputs,
        IS_CHANGED value and signature, in topological order. Raises PromptFailure."""
        links: dict[str, Any] = {}
        nodes = reachable(self.graph, roots, links, known=self.work)
        for node_id in nodes:
            node = self.graph.get_node(node_id)
            spec = self._spec_or_none(node)
            if spec is None:
                class_type = node.get("class_type") if isinstance(node, dict) else None
                raise PromptFailure(node_id, str(class_type), f"Node class '{class_type}' is not registered",
                                    "executor.run.UnknownNodeError")
            self.specs[node_id] = spec
            given = self.converted and node_id in self.prompt  # expanded nodes are converted here
            inputs = dict(node.get("inputs") or {}) if given else _coerced_inputs(spec, node)
            self.work[node_id] = {"class_type": spec.class_type, "inputs": inputs}
        try:
            order = topological_order(self.graph, nodes, links)
        except CycleError as cycle:
            first = cycle.nodes[0]
            raise PromptFailure(first, self.specs[first].class_type, f"Dependency cycle detected: {cycle}",
                                "executor.plan.CycleError") from None
        for node_id in order:
            spec = self.specs[node_id]
            changed = await self._is_changed(node_id) if spec.is_changed is not None else None
            keyed = spec.not_idempotent or any(i.hidden == "UNIQUE_ID" for i in spec.inputs)
            inputs = self.work[node_id]["inputs"]
            self.signatures[node_id] = node_signature(spec.class_type, inputs, self.signatures,
                                                      changed, node_id if keyed else None)
            for value in inputs.values():
                link = as_link(value)
                if link is not None:
                    self._readers[link[0]] = self._readers.get(link[0], 0) + 1
                    if link[0] in self._single_use:
                        self._single_use.add(node_id)
                elif not is_plain(value):
                    self._single_use.add(node_id)

    def _is_output_class(self, class_type: str) -> bool:
        spec = self._spec_or_none({"class_type": class_type})
        if spec is None:
            raise ExpansionError(f"Node class '{class_type}' (in an expansion) is not registered")
        return spec.output_node

    def _spec_or_none(self, node: Any) -> NodeSpec | None:
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            return None
        class_type = node["class_type"]
        if class_type not in self._known:
            self._known[class_type] = self.ex.registry.get(class_type)
        return self._known[class_type]

    async def _is_changed(self, node_id: str) -> Any:
        """The node's IS_CHANGED value: called with its constants as given and its linked inputs
        as None (ComfyUI's convention), per list element; NaN (always rerun) if it raises."""
        spec = self.specs[node_id]
        inputs = {k: [None if as_link(v) is not None else v] for k, v in self.work[node_id]["inputs"].items()
                  if spec.input(k) is not None}
        for ispec in spec.inputs:
            if ispec.hidden:
                inputs[ispec.name] = [self._hidden_value(node_id, ispec.hidden)]
        try:
            with running(self._context(node_id, spec)):
                values = [await call_hook(spec.is_changed, _accepted(spec.is_changed, slice_inputs(spec, inputs, i)))
                          for i in range(max(call_count(spec, inputs), 1))]  # type: ignore[arg-type]
        except Exception as ex:  # node code: report and rerun rather than fail the prompt
            log.warning("IS_CHANGED of node %s (%s) failed: %s", node_id, spec.class_type, ex)
            return float("nan")
        values = [None if isinstance(v, ExecutionBlocker) else v for v in values]
        return values[0] if len(values) == 1 else values

    # ---- scheduling helpers ---------------------------------------------------------------

    def _release_sources(self, node_id: str) -> None:
        """With the cache off (`--cache-none`), drop an output once every node reading it is
        done, so a long graph does not hold all its intermediate images and latents."""
        if self.ex.cache.enabled:
            return
        sources = [link[0] for link in map(as_link, self.work[node_id]["inputs"].values()) if link is not None]
        sources += self._extra_sources.pop(node_id, [])
        for source in sources:
            count = self._readers.get(source)
            if count is None:
                continue
            self._readers[source] = count - 1
            if count == 1:
                self.results.pop(source, None)

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

    def instance(self, node_id: str, spec: NodeSpec) -> Any:
        """The node's object: kept by the executor for submitted nodes, for this run for expanded ones."""
        if node_id in self.prompt:
            return self.ex.instance(node_id, spec)
        obj = self._instances.get(node_id)
        if obj is None:
            obj = self._instances[node_id] = spec.instantiate()
        return obj

    # ---- one node -------------------------------------------------------------------------

    async def _step(self, node_id: str, scheduler: Scheduler) -> bool:
        """Run (or reuse) one ready node; False while it waits (lazy inputs, tasks, expansion)."""
        spec = self.specs[node_id]
        entry = self._cached_entry(node_id)
        if entry is not None:
            self._record(node_id, entry)
            self.progress.finish(node_id)
            return True
        inputs: dict[str, list[Any]] = {}
        try:
            if node_id in self._async:
                outcome = classify(spec, [r.result() if isinstance(r, asyncio.Future) else r
                                          for r in self._async.pop(node_id)])
            elif node_id in self._expansions:
                expansion = self._expansions.pop(node_id)
                self._extra_sources[node_id] = expansion.sources
                self._store(node_id, expansion.resolve(spec, self.results))
                return True
            else:
                inputs, pending = self._gather(node_id, spec)
                if pending:
                    wanted = await self._lazy_wanted(node_id, spec, inputs, pending)
                    sources = [pending[name] for name in wanted if name in pending]
                    if sources:
                        scheduler.block(node_id, sources)
                        return False
                self.progress.start(node_id)
                self.emit(ev.Event(ev.EXECUTING, {"node": node_id, "display_node": self.display(node_id),
                                                  "prompt_id": self.prompt_id}))
                returns = await self._call(node_id, spec, inputs)
                if any(isinstance(r, asyncio.Future) for r in returns):
                    self._async[node_id] = returns
                    return False
                outcome = classify(spec, returns)
            if outcome.expands:
                await self._expand(node_id, spec, outcome, scheduler)
                return False
        except (Interrupted, NodeFailure):
            raise
        except asyncio.CancelledError as ex:
            raise Interrupted("interrupted by the user") from ex
        except Exception as ex:  # the node's own code failed: reported, never propagated
            raise NodeFailure(ex, inputs) from ex
        self._store(node_id, outcome)
        return True

    async def _expand(self, node_id: str, spec: NodeSpec, outcome: CallResult, scheduler: Scheduler) -> None:
        """Splice the returned graphs in; the node waits for the nodes its results link to."""
        try:
            expansion = splice(self.graph, node_id, outcome, self._is_output_class)
            await self.prepare_nodes(expansion.roots)
        except (ExpansionError, PromptFailure) as ex:
            raise NodeFailure(ex, {}) from ex
        for source in expansion.sources:
            self._readers[source] = self._readers.get(source, 0) + 1
        self._expansions[node_id] = expansion
        self.progress.waiting(node_id)
        for output_id in expansion.output_nodes:
            scheduler.add(output_id)
        scheduler.block(node_id, expansion.sources)
        scheduler.requeue(node_id)

    def _store(self, node_id: str, outcome: CallResult) -> None:
        values = outcome.values
        entry = CachedOutput(values=values, ui=outcome.ui, size=sum(estimate_size(v) for v in values))
        self.results[node_id] = entry
        if node_id not in self._single_use:
            self.ex.cache.put(self.signatures[node_id], entry)
        self._record(node_id, entry)
        self.progress.finish(node_id)

    def _record(self, node_id: str, entry: CachedOutput) -> None:
        """Note a finished node; send its ui output (cached ones too, as ComfyUI does)."""
        self.executed.append(node_id)
        if entry.ui is None:
            return
        display = self.display(node_id)
        self.result.outputs[node_id] = entry.ui
        self.result.meta[node_id] = {"node_id": node_id, "display_node": display,
                                     "parent_node": self.graph.get_parent_node_id(node_id),
                                     "real_node_id": self.graph.get_real_node_id(node_id)}
        self.emit(ev.Event(ev.EXECUTED, {"node": node_id, "display_node": display, "output": entry.ui,
                                         "prompt_id": self.prompt_id}))

    def _gather(self, node_id: str, spec: NodeSpec) -> tuple[dict[str, list[Any]], dict[str, str]]:
        """The node's inputs as lists (see `executor/lists.py`), and the lazy inputs whose
        source has not run yet (name → source node id; passed as None meanwhile). A `rawLink`
        input receives the link itself."""
        inputs: dict[str, list[Any]] = {}
        pending: dict[str, str] = {}
        for name, value in self.work[node_id]["inputs"].items():
            link = as_link(value)
            ispec = spec.input(name)
            if link is None or (ispec is not None and ispec.extra.get("rawLink")):
                if ispec is not None or spec.accepts_all_inputs:  # undeclared constants are dropped (ComfyUI)
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
        if kind == "PROMPT":
            return self.prompt
        if kind == "DYNPROMPT":
            return self.graph
        return self.extra_data.get(_HIDDEN_FROM_EXTRA.get(kind, ""))

    async def _lazy_wanted(self, node_id: str, spec: NodeSpec, inputs: dict[str, list[Any]],
                           pending: dict[str, str]) -> list[str]:
        """Ask `check_lazy_status` (sync or async) which unevaluated lazy inputs it needs (all
        of them when the node has no such hook)."""
        if spec.check_lazy_status is None:
            return list(pending)
        obj = self.instance(node_id, spec)
        wanted: list[str] = []
        with running(self._context(node_id, spec)):
            for index in range(call_count(spec, inputs)):
                kwargs = _accepted(spec.check_lazy_status, slice_inputs(spec, inputs, index))
                names = await spec.lazy_status_async(obj, **kwargs)
                wanted.extend(n for n in names if n not in wanted)
        return wanted

    def _context(self, node_id: str, spec: NodeSpec) -> NodeContext:
        return NodeContext(prompt_id=self.prompt_id, node_id=node_id, class_type=spec.class_type,
                           interrupt=self.ex.interrupt, models=self.ex.models, folders=self.ex.folders,
                           on_progress=lambda value, total, preview=None: self._progress(node_id, value, total,
                                                                                         preview),
                           on_message=lambda kind, data: self.emit(ev.Event(kind, data)),
                           on_node_progress=self._node_progress,
                           extra={**self.ex.node_options, "prompt": self.prompt, "extra_data": self.extra_data})

    async def _call(self, node_id: str, spec: NodeSpec, inputs: dict[str, list[Any]]) -> list[Any]:
        """Call the node's function once per list element, inside its NodeContext."""
        func = getattr(self.instance(node_id, spec), spec.function_name)
        with running(self._context(node_id, spec)):
            return await invoke(spec, func, inputs, node_id, between=self.ex.interrupt.check,
                                on_block=lambda blocker: self._blocked(node_id, spec, blocker))

    def _blocked(self, node_id: str, spec: NodeSpec, blocker: ExecutionBlocker) -> ExecutionBlocker:
        """A call met a blocker: with a message, tell the client (ComfyUI's "Execution Blocked"
        error, the prompt goes on) and pass a silent blocker on."""
        if blocker.message is None:
            return blocker
        real = self.graph.get_real_node_id(node_id)
        self.emit(ev.Event(ev.EXECUTION_ERROR, {
            "prompt_id": self.prompt_id, "node_id": real, "node_type": self._class_of(real),
            "executed": list(self.executed), "exception_message": f"Execution Blocked: {blocker.message}",
            "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": [], "current_outputs": [],
            "timestamp": ev.timestamp_ms()}))
        return ExecutionBlocker(None)

    def _progress(self, node_id: str, value: float, total: float, preview: Any) -> None:
        self.progress.update(node_id, value, total)
        # `node` is the node's own id (an expanded node's ephemeral id), as ComfyUI's progress
        # hook reports it from the executing context; progress_state carries the display id.
        self.emit(ev.Event(ev.PROGRESS, {"value": value, "max": total, "prompt_id": self.prompt_id,
                                         "node": node_id}))
        if preview is not None:
            metadata = {"node_id": node_id, "prompt_id": self.prompt_id, "display_node_id": self.display(node_id),
                        "parent_node_id": self.graph.get_parent_node_id(node_id),
                        "real_node_id": self.graph.get_real_node_id(node_id)}
            frame = ev.encode_preview(self.prompt_id, node_id, preview, metadata)
            if frame is not None:
                self.emit(frame)

    def _node_progress(self, node_id: str, value: float, total: float, preview: Any) -> None:
        """Progress reported for a node chosen by id (ComfyAPI); ignored for unknown ids."""
        if node_id in self.work:
            self._progress(node_id, value, total, preview)

    # ---- endings --------------------------------------------------------------------------

    def _class_of(self, node_id: str) -> str:
        spec = self.specs.get(node_id)
        if spec is not None:
            return spec.class_type
        node = self.graph.get(node_id)
        return str(node.get("class_type")) if isinstance(node, dict) else ""

    def _fail_at(self, node_id: str, message: str, exception_type: str, tb: list[str],
                 inputs: Mapping[str, list[Any]]) -> None:
        """A failure of `node_id`, reported on its real node (as ComfyUI reports expanded nodes)."""
        real = self.graph.get_real_node_id(node_id)
        self._fail(real, self._class_of(real), message, exception_type, tb, inputs)

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
        real = self.graph.get_real_node_id(node_id)
        self.status(ev.EXECUTION_INTERRUPTED, {"prompt_id": self.prompt_id, "node_id": real,
                                               "node_type": self._class_of(real), "executed": list(self.executed)})


def _coerced_inputs(spec: NodeSpec, node: Mapping[str, Any]) -> dict[str, Any]:
    """The node's inputs with constants converted as validation converts them (a value that does
    not convert, which only an expansion can produce, is passed as it is)."""
    inputs = dict(node.get("inputs") or {})
    for name, value in inputs.items():
        ispec = spec.input(name)
        if ispec is not None and as_link(value) is None:
            converted, problems = coerce_constant(ispec, value)
            if not problems:
                inputs[name] = converted
    return inputs


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
