"""Dynamic inputs of the schema API: `io.Autogrow` and `io.DynamicCombo` (ComfyUI's names).

Both stand for several sockets in the prompt, named `"<input id>.<name>"` as ComfyUI names
them, and reach `execute` as one dict argument under the input's id:

- `Autogrow.Input(id, template=Autogrow.TemplatePrefix(input, prefix, min=1, max=10))` (or
  `TemplateNames(input, names, min=1)`): sockets `id.<prefix>0`, `id.<prefix>1`, ... (or
  `id.<name>`), each like the template input (a widget template becomes a socket); the first
  `min` are required unless the template input is optional. `execute` gets
  `{name: value}` of the connected ones.
- `DynamicCombo.Input(id, options=[DynamicCombo.Option(key, [inputs...]), ...])`: a combo `id`
  choosing an option, plus `id.<input id>` for each option's inputs. `execute` gets
  `{id: chosen key, <input id>: value, ...}` with the chosen option's inputs only.

In `/object_info` the sockets are listed one by one (optional where they depend on the choice),
so the editor shows every possible socket rather than growing them as ComfyUI's does.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from nodes.comfy_api import io_core as io

Entry = tuple[str, str, tuple[str, dict[str, Any]]]  # (section, name, (type, options))


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
            if not 0 <= min <= max:
                raise ValueError(f"Autogrow.TemplatePrefix: need 0 <= min <= max, got min={min}, max={max}")
            self.input, self.min = input, min
            self.names = [f"{prefix}{i}" for i in range(max)][:100]

    class TemplateNames:
        def __init__(self, input: Any, names: Iterable[str], min: int = 1) -> None:  # noqa: A002
            self.input, self.names, self.min = input, list(names)[:100], min

    class Input(io.Input):
        def __init__(self, id: str, template: Any, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def get_io_type(self) -> str:
            return Autogrow.io_type

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

    class Input(io.Input):
        def __init__(self, id: str, options: Iterable[Any], display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict[str, Any] | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = list(options)

        def get_io_type(self) -> str:
            return DynamicCombo.io_type

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


def fold_dynamic(schema_inputs: Iterable[Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `execute`: dotted sockets gathered into their input's dict."""
    for item in schema_inputs:
        fold = getattr(item, "fold", None)
        if callable(fold):
            fold(inputs)
    return inputs
