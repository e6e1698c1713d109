"""Dynamic types of the schema API: `io.Autogrow`, `io.DynamicCombo` and `io.MatchType` (ComfyUI's names).

Autogrow and DynamicCombo stand for several sockets in the prompt, named `"<input id>.<name>"`
as ComfyUI names them, and reach `execute` as one dict argument under the input's id:

- `Autogrow.Input(id, template=Autogrow.TemplatePrefix(input, prefix, min=1, max=10))` (or
  `TemplateNames(input, names, min=1)`): sockets `id.<prefix>0`, `id.<prefix>1`, ... (or
  `id.<name>`), each like the template input (a widget template becomes a socket); the first
  `min` are required unless the template input is optional. `execute` gets
  `{name: value}` of the connected ones.
- `DynamicCombo.Input(id, options=[DynamicCombo.Option(key, [inputs...]), ...])`: a combo `id`
  choosing an option, plus `id.<input id>` for each option's inputs. `execute` gets
  `{id: chosen key, <input id>: value, ...}` with the chosen option's inputs only.

`/object_info` lists the dynamic input itself, as ComfyUI (0.3.64+) does: `["COMFY_AUTOGROW_V3",
{"template": {"input": {"required": {name: entry}}, "prefix", "min", "max"}}]` (or `"names"`,
`"min"`) and `["COMFY_DYNAMICCOMBO_V3", {"options": [{"key", "inputs": {"required": {...}}}]}]`
(`info_entry`); the editor grows the sockets. Validation and the call use the dotted sockets of
`classic_entries` (each like the template input, optional where they depend on the choice).

- `MatchType.Input(id, template=MatchType.Template("T", allowed_types=[...]))` and
  `MatchType.Output(template)`: sockets of type `COMFY_MATCHTYPE_V3` whose type the editor makes
  follow what is connected to the inputs sharing the template. As in ComfyUI
  (`comfy_execution/validation.py`), a link with a MatchType at either end always validates;
  `/object_info` carries the template (`{"template_id", "allowed_types": "A,B"}`) on each socket
  and `output_matchtypes` (the template id per output, null for others).
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from nodes.comfy_api import io_core as io

Entry = tuple[str, str, tuple[str, dict[str, Any]]]  # (section, name, (type, options))
InfoEntry = tuple[str, str, list[Any]]  # (section, name, [type, options]) as /object_info lists it


def v1_inputs(items: Iterable[Any]) -> dict[str, dict[str, list[Any]]]:
    """ComfyUI's `create_input_dict_v1`: `{"required": {...}, "optional": {...}}` of `[type, options]`."""
    sections: dict[str, dict[str, list[Any]]] = {"required": {}}
    for item in items:
        options = item.as_dict()
        options.pop("optional", None)
        sections.setdefault("optional" if item.optional else "required", {})[item.id] = [item.get_io_type(), options]
    return sections


def _info_entry(item: Any, extra: dict[str, Any]) -> InfoEntry:
    options = item.as_dict() | extra
    options.pop("optional", None)
    return ("optional" if item.optional else "required", item.id, [item.get_io_type(), options])


def _entry(item: Any, name: str, required: bool) -> Entry:
    clone = copy.copy(item)
    clone.id = name
    if isinstance(clone, io.WidgetInput):
        clone.force_input = True
    options = clone.as_dict()
    options.pop("optional", None)
    return ("required" if required else "optional", name, (clone.get_io_type(), options))


class Autogrow:
    """A run of sockets like one template input (`Autogrow.Input`)."""

    io_type = "COMFY_AUTOGROW_V3"

    class TemplatePrefix:
        def __init__(self, input: Any, prefix: str, min: int = 1, max: int = 10) -> None:  # noqa: A002
            if not 0 <= min <= max or not 1 <= max <= 100:
                raise ValueError(f"Autogrow.TemplatePrefix: need 0 <= min <= max and 1 <= max <= 100, "
                                 f"got min={min}, max={max}")
            self.input, self.prefix, self.min, self.max = input, prefix, min, max
            self.names = [f"{prefix}{i}" for i in range(max)]

        def as_dict(self) -> dict[str, Any]:
            return {"input": _template_inputs(self.input), "prefix": self.prefix, "min": self.min, "max": self.max}

    class TemplateNames:
        def __init__(self, input: Any, names: Iterable[str], min: int = 1) -> None:  # noqa: A002
            if min < 0:
                raise ValueError(f"Autogrow.TemplateNames: need min >= 0, got {min}")
            self.input, self.names, self.min = input, list(names)[:100], min

        def as_dict(self) -> dict[str, Any]:
            return {"input": _template_inputs(self.input), "names": list(self.names), "min": self.min}

    class Input(io.Input):
        def __init__(self, id: str, template: Any, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def get_io_type(self) -> str:
            return Autogrow.io_type

        def info_entry(self) -> InfoEntry:
            """The `/object_info` entry ComfyUI gives (the template, not the sockets)."""
            return _info_entry(self, {"template": self.template.as_dict()})

        def classic_entries(self) -> list[Entry]:
            template = self.template
            required = not (self.optional or template.input.optional)
            return [_entry(template.input, f"{self.id}.{name}", required and index < template.min)
                    for index, name in enumerate(template.names)]

        def fold(self, inputs: dict[str, Any]) -> None:
            inputs[self.id] = {name: inputs.pop(f"{self.id}.{name}") for name in self.template.names
                               if f"{self.id}.{name}" in inputs}


class DynamicCombo:
    """A choice whose options bring their own inputs (`DynamicCombo.Input`)."""

    io_type = "COMFY_DYNAMICCOMBO_V3"

    class Option:
        def __init__(self, key: str, inputs: Iterable[Any]) -> None:
            self.key, self.inputs = key, list(inputs)

        def as_dict(self) -> dict[str, Any]:
            return {"key": self.key, "inputs": v1_inputs(self.inputs)}

    class Input(io.Input):
        def __init__(self, id: str, options: Iterable[Any], display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = list(options)

        def get_io_type(self) -> str:
            return DynamicCombo.io_type

        def info_entry(self) -> InfoEntry:
            """The `/object_info` entry ComfyUI gives (every option with its inputs)."""
            return _info_entry(self, {"options": [option.as_dict() for option in self.options]})

        def classic_entries(self) -> list[Entry]:
            options = io._pruned({"tooltip": self.tooltip, "display_name": self.display_name})
            if self.options:
                options["default"] = self.options[0].key
            entries: list[Entry] = [("optional" if self.optional else "required", self.id,
                                     ([o.key for o in self.options], options))]  # type: ignore[list-item]
            seen: set[str] = set()
            for option in self.options:
                for item in option.inputs:
                    name = f"{self.id}.{item.id}"
                    if name not in seen:
                        seen.add(name)
                        section, _, entry = _entry(item, name, False)
                        if isinstance(item, io.WidgetInput):  # a widget of an option stays a widget
                            entry[1].pop("forceInput", None)
                            if item.force_input:
                                entry[1]["forceInput"] = True
                        entries.append((section, name, entry))
            return entries

        def fold(self, inputs: dict[str, Any]) -> None:
            key = inputs.pop(self.id, None)
            chosen = next((o for o in self.options if o.key == key), None)
            value: dict[str, Any] = {self.id: key}
            for option in self.options:
                for item in option.inputs:
                    name = f"{self.id}.{item.id}"
                    if name in inputs:
                        item_value = inputs.pop(name)
                        if option is chosen:
                            value[item.id] = item_value
            inputs[self.id] = value


def _template_inputs(item: Any) -> dict[str, dict[str, list[Any]]]:
    """An Autogrow template's input as ComfyUI lists it: a widget template becomes a socket."""
    clone = copy.copy(item)
    if isinstance(clone, io.WidgetInput):
        clone.force_input = True
    return v1_inputs([clone])


def _comfy_types(allowed: Any) -> list[Any]:
    items = list(allowed) if isinstance(allowed, (list, tuple, set, frozenset)) else [allowed]
    for item in items:
        kind = item if isinstance(item, type) else type(item)
        if not (issubclass(kind, io.ComfyTypeIO) and isinstance(getattr(kind, "io_type", None), str)):
            name = item.__name__ if isinstance(item, type) else type(item).__name__
            raise ValueError(f"Allowed types must be a ComfyType or a list of ComfyTypes, got {name}")
    return items


@io.comfytype("COMFY_MATCHTYPE_V3")
class MatchType(io.ComfyTypeIO):
    """Sockets whose type is whatever is connected to the inputs sharing their template."""

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = io.AnyType) -> None:
            self.template_id = template_id
            self.allowed_types = _comfy_types(allowed_types)

        def as_dict(self) -> dict[str, Any]:
            return {"template_id": self.template_id,
                    "allowed_types": ",".join(t.io_type for t in self.allowed_types)}

    class Input(io.Input):
        def __init__(self, id: str, template: "MatchType.Template", display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"template": self.template.as_dict()}

    class Output(io.Output):
        def __init__(self, template: "MatchType.Template", id: str | None = None, display_name: str | None = "MATCHTYPE",
                     tooltip: str | None = None, is_output_list: bool = False) -> None:
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template


def output_matchtypes(outputs: Iterable[Any]) -> list[str | None] | None:
    """`/object_info`'s `output_matchtypes`: each output's template id (None for others), or None
    when no output is a MatchType (ComfyUI's `get_v1_info`)."""
    ids = [o.template.template_id if isinstance(o, MatchType.Output) else None for o in outputs]
    return ids if any(i is not None for i in ids) else None


def info_layout(schema_inputs: Iterable[Any], hidden_names: Iterable[str]) -> list[str | InfoEntry]:
    """The inputs `/object_info` lists for a schema, in order: names of plain inputs (listed from
    the NodeSpec) and ComfyUI's own entry for each dynamic input."""
    layout: list[str | InfoEntry] = []
    for item in schema_inputs:
        info_entry = getattr(item, "info_entry", None)
        layout.append(info_entry() if callable(info_entry) else item.id)
    return layout + list(hidden_names)


def fold_dynamic(schema_inputs: Iterable[Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `execute`: dotted sockets gathered into their input's dict."""
    for item in schema_inputs:
        fold = getattr(item, "fold", None)
        if callable(fold):
            fold(inputs)
    return inputs
