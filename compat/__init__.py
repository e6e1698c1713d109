"""The compatibility layer for ComfyUI custom node packs: modules under ComfyUI's import names.

`install_compat(runtime)` puts fresh copies of these modules into `sys.modules`, bound to one
runtime (its folders, model manager, interrupt flag and config), before packs are imported:

| ComfyUI name | Loom source |
| --- | --- |
| `folder_paths` | `compat/folder_paths.py` over `folders.Folders` |
| `comfy`, `comfy.utils` | `compat/comfy_utils.py` (ProgressBar → NodeContext progress, common_upscale, load_torch_file) |
| `comfy.model_management` | `compat/model_management.py` over the model manager and the interrupt flag |
| `comfy.samplers` | `compat/samplers.py` (KSampler, KSAMPLER, sample), `compat/cfg_guider.py` (CFGGuider), `compat/comfy_sampler.py` (Sampler) |
| `comfy.sampler_helpers`, `comfy.patcher_extension` | `compat/sampler_helpers.py`, `compat/patcher_extension.py` |
| `node_helpers` | `compat/node_helpers.py` (pillow, conditioning_set_values) |
| `comfy.comfy_types`, `comfy.comfy_types.node_typing` | `compat/comfy_types.py` (IO, ComfyNodeABC, InputTypeDict, ...) |
| `comfy_execution`, `comfy_execution.graph_utils` | `nodes/graph_builder.py` itself (GraphBuilder, Node, is_link, ExecutionBlocker) |
| `comfy_execution.graph` | `compat/comfy_execution_graph.py` (ExecutionBlocker, DynamicPrompt = `executor.dynamic.DynamicGraph`) |
| `comfy_api`, `comfy_api.latest`, `comfy_api.v0_0_2`, `comfy_api.v0_0_1` (+ `.io`, `.ui`) | `nodes/comfy_api/` (io, ui, ComfyExtension, ComfyAPI/ComfyAPISync of `api.py`) |
| `comfy.cli_args` (`args`, LatentPreviewMethod) | `compat/cli_args.py`, a read-only view of the Config |
| `comfy.sample` (prepare_noise, sample, sample_custom, fix_empty_latent_channels) | `compat/comfy_sample.py` |
| `comfy.k_diffusion.sampling` (sample_*, get_sigmas_*, to_d, noise samplers) | `compat/k_diffusion_sampling.py` |
| `latent_preview` (prepare_callback, get_previewer) | `compat/latent_preview.py` |
| `server.PromptServer` | `compat/prompt_server.py` (+ `prompt_queue`: `compat/prompt_queue.py`), re-exported lazily by Loom's own `server` package |
| `execution` (validate_prompt, get_input_data, PromptQueue, ExecutionResult) | `compat/execution.py` |
| `nodes` (ComfyUI's module API: core classes by name, NODE_CLASS_MAPPINGS, common_ksampler, ...) | `compat/nodes_module.py`, as attributes of Loom's own `nodes` package |
| `comfy_extras`, `comfy_extras.nodes_*`, `comfy_extras.chainner_models.model_loading` | `compat/comfy_extras.py` (the facade classes of `nodes`, by ComfyUI's class names) |

During a node call the modules read the running node's context (`nodes.context.current_or_none`)
first, so they follow the executor that runs the node. Nothing global is kept beyond those
`sys.modules` entries and `PromptServer.instance`, which ComfyUI's API defines as a class
attribute. What is not covered is listed in docs/custom-nodes.md.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compat.prompt_server import PromptServer
from nodes.context import InterruptFlag, current_or_none

_HERE = Path(__file__).resolve().parent
# ComfyUI module name -> the compat source file executed under that name (None: a bare package).
SOURCE_MODULES: dict[str, str | None] = {
    "folder_paths": "folder_paths.py",
    "comfy": None,
    "comfy.utils": "comfy_utils.py",
    "comfy.model_management": "model_management.py",
    "comfy.samplers": "samplers.py",
    "node_helpers": "node_helpers.py",
    "comfy.comfy_types": "comfy_types.py",
    "comfy_execution": None,
    "comfy_execution.graph": "comfy_execution_graph.py",
    "comfy.cli_args": "cli_args.py",
    "comfy.sample": "comfy_sample.py",
    "comfy.k_diffusion": None,
    "comfy.k_diffusion.sampling": "k_diffusion_sampling.py",
    "latent_preview": "latent_preview.py",
    "execution": "execution.py",
}
# ComfyUI module name -> the module (already installed above, or one of Loom's own) it is.
ALIASES: dict[str, str] = {
    "comfy.comfy_types.node_typing": "comfy.comfy_types",
    "comfy_execution.graph_utils": "nodes.graph_builder",
    "comfy.sampler_helpers": "compat.sampler_helpers",
    "comfy.patcher_extension": "compat.patcher_extension",
}
# The versions of comfy_api a pack may import; all are served by the one implementation.
COMFY_API_VERSIONS = ("latest", "v0_0_2", "v0_0_1")


@dataclass
class CompatBinding:
    """What the compatibility modules of one runtime reach."""

    folders: Any
    models: Any
    interrupt: InterruptFlag
    config: Any
    prompt_server: PromptServer
    registry: Any = None  # the runtime's node registry (execution.validate_prompt)

    def current_folders(self) -> Any:
        """The running node's folders, else the runtime's."""
        ctx = current_or_none()
        return ctx.folders if ctx is not None and ctx.folders is not None else self.folders

    def current_models(self) -> Any:
        ctx = current_or_none()
        return ctx.models if ctx is not None and ctx.models is not None else self.models

    def current_interrupt(self) -> InterruptFlag:
        ctx = current_or_none()
        return ctx.interrupt if ctx is not None else self.interrupt


def _load_source(name: str, filename: str, binding: CompatBinding) -> types.ModuleType:
    """A fresh module `name` executed from `compat/<filename>` with `BINDING` set beforehand."""
    spec = importlib.util.spec_from_file_location(name, _HERE / filename)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load compatibility module {filename}")
    module = importlib.util.module_from_spec(spec)
    module.BINDING = binding  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _package(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__path__ = []  # a package, so `import comfy.utils` finds the submodule in sys.modules
    return module


def _comfy_api_modules() -> dict[str, types.ModuleType]:
    from nodes.comfy_api import io, ui
    from nodes.comfy_api.api import ComfyAPI, ComfyAPISync
    from nodes.comfy_api.extension import ComfyExtension

    root = _package("comfy_api", "Loom's implementation of ComfyUI's comfy_api package.")
    modules = {"comfy_api": root}
    for version in COMFY_API_VERSIONS:
        name = f"comfy_api.{version}"
        package = _package(name, f"Loom's implementation of ComfyUI's {name} (schema API).")
        for attr, value in {"io": io, "ui": ui, "IO": io, "UI": ui, "ComfyExtension": ComfyExtension,
                            "ComfyAPI": ComfyAPI, "ComfyAPISync": ComfyAPISync,
                            f"ComfyAPI_{version}": ComfyAPI}.items():
            setattr(package, attr, value)
        setattr(root, version, package)
        modules.update({name: package, f"{name}.io": io, f"{name}.ui": ui, f"{name}._io": io, f"{name}._ui": ui})
    return modules


def _link_parent(name: str, module: types.ModuleType) -> None:
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def install_compat(runtime: Any) -> CompatBinding:
    """Install the compatibility modules for `runtime` (`.folders`, `.models`, `.interrupt`,
    `.config`) into `sys.modules` and make a fresh `PromptServer.instance`; returns the binding."""
    prompt_server = PromptServer()
    PromptServer.instance = prompt_server
    binding = CompatBinding(folders=runtime.folders, models=getattr(runtime, "models", None),
                            interrupt=getattr(runtime, "interrupt", None) or InterruptFlag(),
                            config=getattr(runtime, "config", None), prompt_server=prompt_server,
                            registry=getattr(runtime, "registry", None))
    for name, filename in SOURCE_MODULES.items():
        if filename is None:
            module = _package(name, f"Loom's compatibility package for ComfyUI's {name}.")
            sys.modules[name] = module
        else:
            module = _load_source(name, filename, binding)
        _link_parent(name, module)
    for name, target in ALIASES.items():
        module = sys.modules.get(target) or importlib.import_module(target)
        sys.modules[name] = module
        _link_parent(name, module)
    for name, module in _comfy_api_modules().items():
        sys.modules[name] = module
        _link_parent(name, module)
    registry = getattr(runtime, "registry", None)
    mappings: Any = {}
    if registry is not None:
        from compat.nodes_module import install_nodes_api

        mappings = install_nodes_api(registry, binding).NODE_CLASS_MAPPINGS
    from compat.comfy_extras import install_extras

    install_extras(mappings)
    return binding
