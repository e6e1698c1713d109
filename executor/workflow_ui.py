"""The editor's workflow document (UI format 0.4 and 1.0) and its conversion to an API prompt.

What the conversion does, matching what ComfyUI's frontend sends in `POST /prompt`:
- `widgets_values` are laid onto the node's widget inputs (primitives and combos, required
  then optional, in declaration order); a seed-like INT widget (`control_after_generate` in
  its options, or named seed/noise_seed) is followed by its control value, which is skipped;
- links become `[source id, slot]`; a linked widget input (an input entry with a `widget`
  field) takes the link instead of its widget value;
- `Reroute` nodes are followed, legacy `PrimitiveNode`s become constants, muted nodes (mode 2)
  are dropped with their links, bypassed nodes (mode 4) pass their first input of the
  matching type through to each output, `Note`/`MarkdownNote` are ignored;
- subgraphs (`definitions.subgraphs`) are expanded with `parent:child` ids;
- `_meta.title` comes from the node's title.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from executor.workflow_errors import WorkflowError, from_validation_error, json_path
from nodes.spec import InputSpec, NodeSpec

MUTED, BYPASSED = 2, 4
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20


# ---- the document (pydantic) -------------------------------------------------------------------

class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class UiWidgetRef(_Loose):
    name: str


class UiInput(_Loose):
    name: str
    type: Any = None
    link: int | None = None
    widget: UiWidgetRef | None = None


class UiOutput(_Loose):
    name: str | None = None
    type: Any = None
    links: list[int] | None = None


class UiNode(_Loose):
    id: int | str
    type: str
    mode: int = 0
    title: str | None = None
    inputs: list[UiInput] = Field(default_factory=list)
    outputs: list[UiOutput] = Field(default_factory=list)
    widgets_values: list[Any] | dict[str, Any] | None = None


class UiLink(_Loose):
    """A link of the 1.0 format (the 0.4 format's `[id, from, slot, to, slot, type]` lists are
    read into the same shape)."""

    id: int
    origin_id: int | str
    origin_slot: int
    target_id: int | str
    target_slot: int
    type: Any = None


class SubgraphIO(_Loose):
    name: str | None = None
    type: Any = None
    linkIds: list[int] = Field(default_factory=list)


class UiSubgraph(_Loose):
    id: str
    name: str | None = None
    nodes: list[UiNode] = Field(default_factory=list)
    links: list[UiLink | list[Any]] = Field(default_factory=list)
    inputs: list[SubgraphIO] = Field(default_factory=list)
    outputs: list[SubgraphIO] = Field(default_factory=list)


class UiDefinitions(_Loose):
    subgraphs: list[UiSubgraph] = Field(default_factory=list)


class UiWorkflow(_Loose):
    """The whole document; `groups`, `config`, `extra` and the rest are kept but unused."""

    nodes: list[UiNode]
    links: list[UiLink | list[Any]] = Field(default_factory=list)
    groups: list[Any] = Field(default_factory=list)
    version: float | int | str | None = None
    definitions: UiDefinitions | None = None


_WORKFLOW = TypeAdapter(UiWorkflow)


def parse_ui(obj: Any) -> UiWorkflow:
    """Check a UI document's structure; raises `WorkflowError` at the offending JSON path."""
    if not isinstance(obj, dict):
        raise WorkflowError(f"a UI workflow must be a JSON object, not {type(obj).__name__}")
    try:
        return _WORKFLOW.validate_python(obj)
    except ValidationError as error:
        raise from_validation_error(error) from None


def _read_link(raw: UiLink | list[Any], path: str) -> UiLink:
    if isinstance(raw, UiLink):
        return raw
    if len(raw) < 5:
        raise WorkflowError("a link must be [id, origin_id, origin_slot, target_id, target_slot, type]", path)
    try:
        return UiLink(id=raw[0], origin_id=raw[1], origin_slot=raw[2], target_id=raw[3], target_slot=raw[4],
                      type=raw[5] if len(raw) > 5 else None)
    except ValidationError as error:
        raise WorkflowError(error.errors()[0]["msg"], path) from None


# ---- flattening: one graph of nodes with resolved sources, subgraphs expanded -------------------

Source = tuple[str, int]


_NO_VALUE = object()


@dataclass
class FlatInput:
    """An input after flattening: its source output, or (subgraph inputs only) a promoted
    widget value the instance holds."""

    name: str
    type: Any
    widget: str | None
    source: Source | None
    value: Any = _NO_VALUE


@dataclass
class FlatNode:
    """A node after subgraph expansion; `kind` "pass" marks subgraph boundaries (output slot i
    forwards input i)."""

    key: str
    type: str
    mode: int
    title: str | None
    widgets: list[Any] | dict[str, Any] | None
    inputs: list[FlatInput]
    output_types: list[Any]
    kind: Literal["node", "pass"] = "node"
    linked_out: bool = False


@dataclass
class _Flattener:
    subgraphs: dict[str, UiSubgraph]
    nodes: dict[str, FlatNode] = field(default_factory=dict)

    def scope(self, nodes: list[UiNode], links: list[UiLink | list[Any]], prefix: str, path: str,
              boundary_in: str | None, depth: int = 0) -> dict[int, Source]:
        """Add a graph's nodes under `prefix`; returns, for a subgraph, the sources feeding its
        output slots (links into the output node)."""
        if depth > 32:
            raise WorkflowError("subgraphs nested more than 32 deep (a subgraph containing itself?)", path)
        table = {}
        for index, raw in enumerate(links):
            if raw is None:
                continue
            link = _read_link(raw, f"{path}.links[{index}]")
            table[link.id] = link
        outputs: dict[int, Source] = {}
        for link in table.values():
            if str(link.target_id) == str(SUBGRAPH_OUTPUT_NODE):
                outputs[link.target_slot] = self._source(link, prefix, boundary_in)
        for index, node in enumerate(nodes):
            self._add(node, table, prefix, f"{path}.nodes[{index}]", boundary_in, depth)
        return outputs

    def _source(self, link: UiLink, prefix: str, boundary_in: str | None) -> Source:
        if str(link.origin_id) == str(SUBGRAPH_INPUT_NODE) and boundary_in is not None:
            return boundary_in, link.origin_slot
        return f"{prefix}{link.origin_id}", link.origin_slot

    def _add(self, node: UiNode, table: dict[int, UiLink], prefix: str, path: str, boundary_in: str | None,
             depth: int) -> None:
        key = f"{prefix}{node.id}"
        inputs = []
        for slot, entry in enumerate(node.inputs):
            link = table.get(entry.link) if entry.link is not None else None
            source = self._source(link, prefix, boundary_in) if link is not None else None
            inputs.append(FlatInput(entry.name, entry.type, entry.widget.name if entry.widget else None, source))
        flat = FlatNode(key, node.type, node.mode, node.title, node.widgets_values, inputs,
                        [o.type for o in node.outputs], linked_out=any(o.links for o in node.outputs))
        subgraph = self.subgraphs.get(node.type)
        if subgraph is not None and node.mode != BYPASSED:
            self._expand(flat, subgraph, path, depth)
            return
        self.nodes[key] = flat

    def _expand(self, instance: FlatNode, subgraph: UiSubgraph, path: str, depth: int) -> None:
        """Replace a subgraph instance by its inner nodes (ids `instance:inner`)."""
        inner_in = f"{instance.key}:{SUBGRAPH_INPUT_NODE}"
        _apply_promoted_values(instance, subgraph)
        self.nodes[inner_in] = FlatNode(inner_in, "SubgraphInput", instance.mode, None, None, instance.inputs,
                                        [i.type for i in instance.inputs], kind="pass")
        before = set(self.nodes)
        outputs = self.scope(subgraph.nodes, subgraph.links, f"{instance.key}:", f"{path}<{subgraph.id}>", inner_in,
                             depth + 1)
        if instance.mode == MUTED:
            for key in set(self.nodes) - before:
                self.nodes[key].mode = MUTED
        count = max([len(subgraph.outputs), len(instance.output_types), *(s + 1 for s in outputs)])
        passthrough = [FlatInput(f"out{i}", None, None, outputs.get(i)) for i in range(count)]
        self.nodes[instance.key] = FlatNode(instance.key, "SubgraphOutput", instance.mode, instance.title, None,
                                            passthrough, list(instance.output_types), kind="pass")


def _promoted_inputs(subgraph: UiSubgraph) -> list[int]:
    """The subgraph inputs that feed an interior widget, in order: each owns one slot of the
    instance's `widgets_values` (the frontend's promoted widgets)."""
    inner = {str(n.id): n for n in subgraph.nodes}
    promoted: set[int] = set()
    for raw in subgraph.links:
        if raw is None:
            continue
        try:
            link = _read_link(raw, "")
        except WorkflowError:
            continue
        if str(link.origin_id) != str(SUBGRAPH_INPUT_NODE):
            continue
        target = inner.get(str(link.target_id))
        if target is not None and 0 <= link.target_slot < len(target.inputs) \
                and target.inputs[link.target_slot].widget is not None:
            promoted.add(link.origin_slot)
    return sorted(promoted)


def _apply_promoted_values(instance: FlatNode, subgraph: UiSubgraph) -> None:
    """Give unlinked promoted inputs the value the instance holds (the host's value wins over
    the interior widget's, as in ComfyUI's frontend)."""
    values = instance.widgets if isinstance(instance.widgets, list) else []
    for position, slot in enumerate(_promoted_inputs(subgraph)):
        if position < len(values) and slot < len(instance.inputs) and instance.inputs[slot].source is None:
            instance.inputs[slot].value = values[position]


# ---- resolving sources through reroutes, primitives, bypass and mute ----------------------------

Resolved = tuple[Literal["link"], str, int] | tuple[Literal["const"], Any] | None


def _types_match(a: Any, b: Any) -> bool:
    if a in (None, "*", "") or b in (None, "*", ""):
        return True
    return str(a) == str(b)


def _bypass_input(node: FlatNode, slot: int) -> Source | None:
    """The input a bypassed node passes to output `slot`: the same index when its type fits,
    else the first linked input of a matching type (as ComfyUI's frontend does)."""
    out_type = node.output_types[slot] if slot < len(node.output_types) else None
    if slot < len(node.inputs) and node.inputs[slot].source is not None \
            and _types_match(node.inputs[slot].type, out_type):
        return node.inputs[slot].source
    for entry in node.inputs:
        if entry.source is not None and _types_match(entry.type, out_type):
            return entry.source
    return None


def resolve(nodes: dict[str, FlatNode], source: Source | None) -> Resolved:
    """Follow a source through reroutes, subgraph boundaries and bypassed nodes to a real
    output, a constant (a legacy PrimitiveNode) or nothing (a muted or missing node)."""
    seen: set[Source] = set()
    while source is not None and source not in seen:
        seen.add(source)
        key, slot = source
        node = nodes.get(key)
        if node is None or node.mode == MUTED:
            return None
        if node.kind == "pass":
            entry = node.inputs[slot] if 0 <= slot < len(node.inputs) else None
            if entry is not None and entry.source is None and entry.value is not _NO_VALUE:
                return "const", entry.value
            source = entry.source if entry is not None else None
        elif node.type == "Reroute":
            source = node.inputs[0].source if node.inputs else None
        elif node.mode == BYPASSED:
            source = _bypass_input(node, slot)
        elif node.type == "PrimitiveNode":
            values = node.widgets
            if isinstance(values, list) and values:
                return "const", values[0]
            return None
        else:
            return "link", key, slot
    return None


# ---- widgets and the API entries ------------------------------------------------------------------

def widget_inputs(spec: NodeSpec) -> list[InputSpec]:
    """The inputs that have a widget, in the editor's order: required, then optional."""
    widgets = [i for i in spec.inputs if i.is_widget and not i.hidden]
    return [i for i in widgets if not i.optional] + [i for i in widgets if i.optional]


def is_seed_like(spec: InputSpec) -> bool:
    """An INT widget the editor follows with a control_after_generate value."""
    return spec.type == "INT" and (bool(spec.extra.get("control_after_generate")) or spec.name in SEED_NAMES)


def _is_control_value(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def map_widgets(spec: NodeSpec, values: list[Any] | dict[str, Any] | None) -> dict[str, Any]:
    """Input values from `widgets_values` (a list in widget order, or a dict by name)."""
    if isinstance(values, dict):
        return {w.name: values.get(w.name, w.default) for w in widget_inputs(spec)
                if w.name in values or w.default is not None}
    mapped: dict[str, Any] = {}
    values = values or []
    index = 0
    for widget in widget_inputs(spec):
        if index >= len(values):
            if widget.default is not None:  # the editor would have shown and sent the default
                mapped[widget.name] = widget.default
            continue
        mapped[widget.name] = values[index]
        index += 1
        if is_seed_like(widget) and index < len(values) and _is_control_value(values[index]):
            index += 1
    return mapped


def _wrap(value: Any) -> Any:
    """Lists are links in the API format; list-valued widgets travel as `{"__value__": [...]}`."""
    return {"__value__": value} if isinstance(value, list) else value


def _api_entry(node: FlatNode, spec: NodeSpec | None, nodes: dict[str, FlatNode]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if spec is not None:
        inputs = {name: _wrap(value) for name, value in map_widgets(spec, node.widgets).items()}
    for entry in node.inputs:
        resolved = resolve(nodes, entry.source)
        name = entry.widget or entry.name
        if resolved is None:
            continue
        inputs[name] = [resolved[1], resolved[2]] if resolved[0] == "link" else _wrap(resolved[1])
    title = node.title or (spec.display_name if spec is not None else None) or node.type
    return {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}


def _is_sent(node: FlatNode, spec: NodeSpec | None) -> bool:
    """Whether the node becomes an API node (the frontend leaves out virtual ones)."""
    if node.kind == "pass" or node.mode in (MUTED, BYPASSED):
        return False
    if node.type in NOTE_TYPES or node.type in ("Reroute", "PrimitiveNode"):
        return False
    # An unknown type is sent (validation names it) unless it is an unlinked decoration
    # such as a custom pack's label node, which a frontend without that pack would also drop.
    return spec is not None or node.linked_out or any(i.source is not None for i in node.inputs)


def ui_to_api(ui: Any, registry: Any) -> dict[str, Any]:
    """Convert an editor document to an API prompt; raises `WorkflowError` with a JSON path."""
    document = parse_ui(ui)
    subgraphs = {s.id: s for s in (document.definitions.subgraphs if document.definitions else [])}
    flattener = _Flattener(subgraphs)
    flattener.scope(document.nodes, document.links, "", "$", None)
    prompt: dict[str, Any] = {}
    for key, node in flattener.nodes.items():
        spec = registry.get(node.type) if registry is not None else None
        if _is_sent(node, spec):
            prompt[key] = _api_entry(node, spec, flattener.nodes)
    return prompt


__all__ = ["UiWorkflow", "parse_ui", "ui_to_api", "map_widgets", "widget_inputs", "resolve", "json_path"]
