"""Validation of an API prompt before it runs, with every error reported at once.

Only nodes feeding an output node (or the requested `partial_execution_targets` among them)
are checked. The result has ComfyUI's HTTP 400 shape: a top-level `error` and per-node
`node_errors` (`{id: {errors, dependent_outputs, class_type}}`). As in ComfyUI, the prompt is
valid when at least one output validates; the failing outputs are reported and left out of
`outputs`. The walk is iterative (topological order, no recursion), so a 10,000-node chain
validates in one pass; the individual rules live in `executor/validate_checks.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from executor import validate_checks as checks
from executor.plan import find_cycles, reachable, topological_partial
from nodes.context import hook_context
from nodes.spec import FileIndex, NodeSpec


class SpecLookup(Protocol):
    """What validation needs of `nodes.registry.NodeRegistry`."""

    def get(self, class_type: str) -> NodeSpec | None: ...


@dataclass
class ValidationResult:
    """`ok`, ComfyUI's top-level `error` (None when ok), `node_errors`, the output node ids that
    validated (what to execute), and `prompt`: the prompt with constants converted the way
    ComfyUI converts them ("5" → 5 for an INT), which is what should be executed."""

    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any]
    outputs: list[str]
    prompt: dict[str, Any] = field(default_factory=dict)

    def response(self) -> dict[str, Any]:
        """The HTTP 400 body ComfyUI sends for an invalid prompt."""
        return {"error": self.error, "node_errors": self.node_errors}


def _invalid_prompt(message: str, details: str = "") -> ValidationResult:
    error = checks.make_error("invalid_prompt", message, details)
    return ValidationResult(False, error, {}, [], {})


def _check_structure(prompt: Any) -> ValidationResult | None:
    if not isinstance(prompt, dict):
        return _invalid_prompt("Cannot execute because the prompt is not a JSON object of nodes.",
                               f"got {type(prompt).__name__}")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            return _invalid_prompt("Cannot execute because a node is missing the class_type property.",
                                   f"Node ID '#{node_id}'")
        if not isinstance(node.get("inputs", {}), dict):
            return _invalid_prompt("Cannot execute because a node's inputs are not a JSON object.",
                                   f"Node ID '#{node_id}'")
    return None


def _title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) else None


def validate_prompt(prompt: Any, registry: SpecLookup, files: FileIndex | None = None,
                    partial_targets: Iterable[str] | None = None) -> ValidationResult:
    """Check `prompt` (API format) against the registry; never raises for a malformed prompt."""
    broken = _check_structure(prompt)
    if broken is not None:
        return broken
    work = {str(k): {**v, "inputs": dict(v.get("inputs") or {})} for k, v in prompt.items()}
    lookup = _memo_lookup(registry)
    specs = {node_id: lookup(node["class_type"]) for node_id, node in work.items()}
    node_errors: dict[str, Any] = {}
    for node_id, spec in specs.items():
        if spec is None:
            node = work[node_id]
            _add_errors(node_errors, node_id, node["class_type"],
                        [checks.check_unknown_class(node_id, node["class_type"], _title(node))])
    targets = None if partial_targets is None else {str(t) for t in partial_targets}
    outputs = [n for n, s in specs.items() if s is not None and s.output_node and (targets is None or n in targets)]
    if not outputs and not node_errors:
        error = checks.make_error("prompt_no_outputs", "Prompt has no outputs", "")
        return ValidationResult(False, error, {}, [], work)
    links: dict[str, Any] = {}
    nodes = reachable(work, outputs, links)
    bad = _check_nodes(work, specs, nodes, links, lookup, files, node_errors)
    good = [o for o in outputs if o not in bad]
    _fill_dependent_outputs(work, [o for o in outputs if o in bad], node_errors)
    unknown = [e for e in node_errors.values() if e["errors"][0]["type"] == "missing_node_type"]
    if unknown:
        return ValidationResult(False, unknown[0]["errors"][0], node_errors, good, work)
    if not good:
        lines = [f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"]]
        error = checks.make_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                  "\n".join(lines))
        return ValidationResult(False, error, node_errors, [], work)
    return ValidationResult(True, None, node_errors, good, work)


def _add_errors(node_errors: dict[str, Any], node_id: str, class_type: str, errors: list[dict[str, Any]]) -> None:
    entry = node_errors.setdefault(node_id, {"errors": [], "dependent_outputs": [], "class_type": class_type})
    entry["errors"].extend(errors)


def _memo_lookup(registry: SpecLookup) -> Callable[[str], NodeSpec | None]:
    """`registry.get`, remembered per class type for the length of one validation."""
    known: dict[str, NodeSpec | None] = {}

    def lookup(class_type: str) -> NodeSpec | None:
        try:
            return known[class_type]
        except KeyError:
            spec = known[class_type] = registry.get(class_type)
            return spec
    return lookup


def _check_nodes(work: dict[str, Any], specs: Mapping[str, NodeSpec | None], nodes: list[str],
                 links: dict[str, Any], lookup: Callable[[str], NodeSpec | None], files: FileIndex | None,
                 node_errors: dict[str, Any]) -> set[str]:
    """Check each node once, in topological order; returns the nodes that are invalid
    themselves or through something they depend on."""
    order, stuck = topological_partial(work, nodes, links)
    bad: set[str] = set()
    for group in find_cycles(work, stuck) if stuck else []:
        path = " -> ".join(group + group[:1])
        for node_id in group:
            _add_errors(node_errors, node_id, work[node_id]["class_type"], [checks.make_error(
                "dependency_cycle", "Dependency cycle detected", f"nodes {path}", cycle=group)])
    bad.update(stuck)
    for node_id in order + stuck:
        spec = specs[node_id]
        if spec is None:
            bad.add(node_id)
            continue
        errors = check_node(spec, work[node_id]["inputs"], work, lookup, files, node_id=node_id)
        if errors:
            _add_errors(node_errors, node_id, spec.class_type, errors)
            bad.add(node_id)
        elif node_id not in bad and any(s in bad or s not in work for _, s, _ in links.get(node_id, ())):
            bad.add(node_id)
    return bad


def check_node(spec: NodeSpec, inputs: dict[str, Any], prompt: Mapping[str, Any],
               lookup: Callable[[str], NodeSpec | None],
               files: FileIndex | None = None, node_id: str = "") -> list[dict[str, Any]]:
    """All errors of one node; converts its constant inputs in place (ComfyUI's coercions).

    The node's own VALIDATE_INPUTS runs inside a hook context holding the folders, so hooks that
    look files up (LoadImage, LoadLatent) can check them at validation time."""
    errors: list[dict[str, Any]] = []
    custom_args, custom_kwargs = checks.custom_validation_args(spec)
    received_types: dict[str, str] = {}
    constants: dict[str, Any] = {}
    for ispec in spec.inputs:
        if ispec.hidden:
            continue
        name = ispec.name
        if name not in inputs:
            errors += checks.check_required(ispec, inputs)
            continue
        value = inputs[name]
        if isinstance(value, (list, tuple)):
            check_type = "input_types" not in custom_args
            errors += checks.check_link(ispec, value, prompt, lookup, check_type, received_types)
            constants[name] = None  # VALIDATE_INPUTS sees a linked input as None (ComfyUI)
            continue
        value, problems = checks.coerce_constant(ispec, value)
        if problems:
            errors += problems
            continue
        inputs[name] = constants[name] = value
        if name in custom_args or custom_kwargs:
            continue
        errors += checks.check_range(ispec, value) or checks.check_combo(ispec, value, files)
    for ispec in spec.inputs:
        if ispec.hidden:
            constants[ispec.name] = node_id if ispec.hidden == "UNIQUE_ID" else (
                prompt if ispec.hidden in ("PROMPT", "DYNPROMPT") else None)
    for name, value in inputs.items():  # undeclared links (inputs a node reads from **kwargs)
        if spec.input(name) is None and isinstance(value, list):
            constants[name] = None
            errors += checks.check_undeclared_link(spec, name)
    with hook_context(node_id, spec.class_type, folders=files if hasattr(files, "full_path") else None):
        errors += checks.check_custom(spec, constants, received_types, custom_args, custom_kwargs)
    return errors


def _fill_dependent_outputs(work: Mapping[str, Any], failed_outputs: list[str], node_errors: dict[str, Any]) -> None:
    """List, for each node with errors, the failed outputs that depend on it (ComfyUI's field)."""
    for output in failed_outputs:
        for node_id in reachable(work, [output]):
            entry = node_errors.get(node_id)
            if entry is not None and output not in entry["dependent_outputs"]:
                entry["dependent_outputs"].append(output)
