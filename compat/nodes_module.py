"""ComfyUI's `nodes` module API on Loom's own `nodes` package: what packs import from `nodes`.

Loom's node library is the package `nodes`; ComfyUI's is the module `nodes` whose attributes are its core node
classes. The two coexist in one package: `install_nodes_api(registry, binding)` adds ComfyUI's names as
attributes of Loom's package (class names are CamelCase, Loom's submodules lower-case, so nothing clashes):

- each registered node by its ComfyUI name (`nodes.CLIPTextEncode`, ...): for Loom's typed nodes a ComfyUI-style
  class (`INPUT_TYPES`, `RETURN_TYPES`, `FUNCTION`, ... and the method ComfyUI names, taking ComfyUI's positional
  order: `nodes.CLIPTextEncode().encode(clip, text)` returns `([[cond, {...}]],)`), which packs may also subclass;
  for ComfyUI-style classes of other packs, the class itself; `Class.execute(...)` called on the class runs the
  node as ComfyUI's schema (v3) nodes do and returns an `io.NodeOutput`;
- `NODE_CLASS_MAPPINGS` / `NODE_DISPLAY_NAME_MAPPINGS`: live read-only views of the registry (packs loaded later
  appear too); `MAX_RESOLUTION`; `common_ksampler(...)`; `before_node_execution()`; `interrupt_processing()`;
  `EXTENSION_WEB_DIRS`.

A facade call runs the Loom node in the calling node's context (its folders and model manager).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Iterator

from compat.comfy_methods import COMFY_METHODS, EXTRAS_SAME_ORDER
from nodes.spec import Node, NodeSpec, normalize_result

MAX_RESOLUTION = 16384


def _positional(spec: NodeSpec) -> tuple[str, ...]:
    """The order positional arguments take: ComfyUI's method signature where known, else the declared order."""
    known = COMFY_METHODS.get(spec.class_type)
    if known is not None:
        return known[1]
    visible = [i for i in spec.inputs if not i.hidden]
    return tuple(i.name for i in visible if not i.optional) + tuple(i.name for i in visible if i.optional)


def method_name(spec: NodeSpec) -> str:
    """ComfyUI's `FUNCTION` for a node: known for core and comfy_extras nodes, else Loom's `execute`."""
    known = COMFY_METHODS.get(spec.class_type)
    return known[0] if known is not None else EXTRAS_SAME_ORDER.get(spec.class_type, "execute")


def _call(spec: NodeSpec, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    names = _positional(spec)
    if len(args) > len(names):
        raise TypeError(f"{spec.class_type}.{method_name(spec)}() takes "
                        f"{len(names)} positional arguments but {len(args)} were given")
    inputs = dict(zip(names, args))
    for name, value in kwargs.items():
        if name in inputs:
            raise TypeError(f"{spec.class_type}: got multiple values for argument {name!r}")
        inputs[name] = value
    for item in spec.inputs:  # hidden inputs a pack does not pass (prompt, extra_pnginfo, unique_id) are None
        if item.hidden and item.name not in inputs:
            inputs[item.name] = None
    declared = {i.name for i in spec.inputs}
    result = getattr(instance, spec.function_name)(**{k: v for k, v in inputs.items() if k in declared})
    out = normalize_result(spec, result)
    if out.ui is not None:
        return {"ui": out.ui, "result": tuple(out.values)}
    return tuple(out.values)


class _SchemaExecute:
    """`execute` of a facade class: called on the class (`GrowMask.execute(mask, 2, False)`, ComfyUI's schema
    nodes) it runs a fresh node and returns an `io.NodeOutput`; on an instance it is the classic method."""

    def __init__(self, method: Any) -> None:
        self.method = method

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is not None:
            return self.method.__get__(instance, owner)

        def execute(*args: Any, **kwargs: Any) -> Any:
            from nodes.comfy_api.io_core import NodeOutput

            out = self.method(owner(), *args, **kwargs)
            if isinstance(out, dict):
                return NodeOutput(*out["result"], ui=out["ui"])
            return NodeOutput(*out)
        return execute


def comfy_class(spec: NodeSpec, folders: Any = None) -> type:
    """A ComfyUI-style class for one of Loom's typed nodes (see the module docstring)."""
    function = method_name(spec)
    info = spec.object_info(folders)

    def input_types(cls: type) -> dict[str, Any]:
        # ComfyUI's Python form: each entry a tuple (`("INT", {...})`, `(["a", "b"],)`), hidden ones a string.
        sections = spec.object_info(folders)["input"]
        return {section: {name: tuple(entry) if isinstance(entry, list) else entry for name, entry in inputs.items()}
                for section, inputs in sections.items()}

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_loom_node", None) is None:
            self._loom_node = spec.instantiate()
        return _call(spec, self._loom_node, args, kwargs)

    attrs: dict[str, Any] = {
        "__doc__": spec.description or f"ComfyUI's {spec.class_type}, run by Loom.",
        "__module__": "nodes",
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(info["output"]),
        "RETURN_NAMES": tuple(info["output_name"]),
        "OUTPUT_IS_LIST": tuple(info["output_is_list"]),
        "FUNCTION": function,
        "CATEGORY": spec.category,
        "OUTPUT_NODE": spec.output_node,
        "DESCRIPTION": spec.description,
        "_loom_spec": spec,
        function: method,
    }
    attrs["execute"] = _SchemaExecute(method)  # also the FUNCTION itself when ComfyUI's is "execute"
    if spec.not_idempotent:
        attrs["NOT_IDEMPOTENT"] = True
    return type(spec.class_type, (), attrs)


class _ClassMappings(Mapping[str, type]):
    """`NODE_CLASS_MAPPINGS`: every registered node by name, as the class a ComfyUI pack expects."""

    def __init__(self, registry: Any, folders: Any) -> None:
        self._registry = registry
        self._folders = folders
        self._facades: dict[int, type] = {}

    def __getitem__(self, name: str) -> type:
        spec = self._registry.get(name)
        if spec is None:
            raise KeyError(name)
        source = spec.source
        if isinstance(source, type) and not issubclass(source, Node):
            return source  # a ComfyUI-style class of a pack: itself
        key = id(spec)
        if key not in self._facades:
            self._facades[key] = comfy_class(spec, self._folders)
        return self._facades[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return sum(1 for _ in self._registry)


class _DisplayNames(Mapping[str, str]):
    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def __getitem__(self, name: str) -> str:
        spec = self._registry.get(name)
        if spec is None:
            raise KeyError(name)
        return spec.display_name or name

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return sum(1 for _ in self._registry)


def install_nodes_api(registry: Any, binding: Any) -> Any:
    """Give Loom's `nodes` package ComfyUI's module API for `registry` (see the module docstring)."""
    package = sys.modules["nodes"]
    mappings = _ClassMappings(registry, binding.folders)

    def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                        positive: Any, negative: Any, latent: dict[str, Any], denoise: float = 1.0,
                        disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                        force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
        """ComfyUI's `nodes.common_ksampler`: KSamplerAdvanced's sampling with KSampler's arguments."""
        sampler = mappings["KSamplerAdvanced"]()
        return sampler.sample(model, "disable" if disable_noise else "enable", seed, steps, cfg, sampler_name,
                              scheduler, positive, negative, latent, 0 if start_step is None else start_step,
                              10000 if last_step is None else last_step,
                              "disable" if force_full_denoise else "enable", denoise=denoise)

    def before_node_execution() -> None:
        binding.current_interrupt().check()

    def interrupt_processing(value: bool = True) -> None:
        flag = binding.current_interrupt()
        flag.set() if value else flag.clear()

    api = {"NODE_CLASS_MAPPINGS": mappings, "NODE_DISPLAY_NAME_MAPPINGS": _DisplayNames(registry),
           "MAX_RESOLUTION": MAX_RESOLUTION, "common_ksampler": common_ksampler,
           "before_node_execution": before_node_execution, "interrupt_processing": interrupt_processing,
           "EXTENSION_WEB_DIRS": {}}
    for name, value in api.items():
        setattr(package, name, value)
    package.__getattr__ = _node_attribute(mappings)  # type: ignore[attr-defined]
    return package


def _node_attribute(mappings: _ClassMappings) -> Any:
    """Module `__getattr__` (PEP 562): `nodes.<ClassName>` for every registered node, looked up when asked."""
    def __getattr__(name: str) -> Any:
        if name[:1].isupper() or name.startswith("unCLIP"):
            try:
                return mappings[name]
            except KeyError:
                pass
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    return __getattr__
