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
| `comfy_api`, `comfy_api.latest`, `comfy_api.v0_0_2`, `comfy_api.v0_0_1` (+ `.io`, `.ui`, `.input`, `.input_impl`, `.util`) | `nodes/comfy_api/` (io, ui, ComfyExtension, ComfyAPI/ComfyAPISync of `api.py`; Input/InputImpl/Types of `media.py`) |
| `comfy.cli_args` (`args`, LatentPreviewMethod) | `compat/cli_args.py`, a read-only view of the Config |
| `comfy.sample` (prepare_noise, sample, sample_custom, fix_empty_latent_channels) | `compat/comfy_sample.py` |
| `comfy.k_diffusion.sampling` (sample_*, get_sigmas_*, to_d, noise samplers) | `compat/k_diffusion_sampling.py` |
| `latent_preview` (prepare_callback, get_previewer) | `compat/latent_preview.py` |
| `server.PromptServer` | `compat/prompt_server.py` (+ `prompt_queue`: `compat/prompt_queue.py`), re-exported lazily by Loom's own `server` package |
| `execution` (validate_prompt, get_input_data, PromptQueue, ExecutionResult) | `compat/execution.py` |
| `nodes` (ComfyUI's module API: core classes by name, NODE_CLASS_MAPPINGS, common_ksampler, ...) | `compat/nodes_module.py`, as attributes of Loom's own `nodes` package |
| `comfy.model_patcher` (ModelPatcher: Loom's MODEL handle itself, `diffusion/patcher_api.py`) | `compat/model_patcher.py` |
| `comfy.sd` (CLIP, VAE, load_checkpoint_guess_config, load_lora_for_models, load_clip, load_diffusion_model) | `compat/comfy_sd.py` |
| `comfy.lora` (load_lora, model_lora_keys_unet/clip, calculate_weight) | `compat/comfy_lora.py` |
| `comfy.ops` (disable_weight_init, manual_cast, cast_bias_weight) | `compat/comfy_ops.py` |
| `comfy.latent_formats` (LatentFormat, SD15, SDXL, SDXL_Playground_2_5, SD3) | `compat/latent_formats.py` |
| `comfy.model_base` (ModelType, BaseModel, SD15, SD21, SDXL, SDXLRefiner, SD3 as isinstance checks) | `compat/model_base.py` |
| `comfy.ldm.modules.attention` (optimized_attention, CrossAttention, ...) | `compat/ldm_attention.py` |
| `comfy.ldm.modules.diffusionmodules.openaimodel` (UNetModel, timestep_embedding, ...) | `compat/ldm_openaimodel.py` |
| `comfy.sdxl_clip` (SDXLClipModel, SDXLRefinerClipModel, SDXLClipG, tokenizers as isinstance checks) | `compat/sdxl_clip.py` |
| `comfy.clip_vision` (load, load_clipvision_from_sd, clip_preprocess, ClipVisionModel, Output) | `compat/clip_vision.py` |
| `comfy.controlnet` (load_controlnet, load_controlnet_state_dict, load_t2i_adapter, ControlBase, ...) | `compat/controlnet.py` |
| `comfy.cldm`, `comfy.cldm.cldm` (ControlNet: the network class) | `compat/cldm.py` |
| `comfy.model_detection` (unet_prefix_from_state_dict, detect_unet_config, model_config_from_unet) | `compat/model_detection.py` |
| `comfy_extras`, `comfy_extras.nodes_*`, `comfy_extras.chainner_models.model_loading` | `compat/comfy_extras.py` (the facade classes of `nodes`, by ComfyUI's class names) |

During a node call the modules read the running node's context (`nodes.context.current_or_none`)
first, so they follow the executor that runs the node. Nothing global is kept beyond those
`sys.modules` entries, `PromptServer.instance`, which ComfyUI's API defines as a class
attribute, and the two hooks of `diffusion.patcher_api` (`DEVICE_RESOLVER`, `PLACER`) through which
MODEL/CLIP/VAE values called directly by pack code reach the running node's model manager (the
last runtime built installs them). What is not covered is listed in docs/custom-nodes.md.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from compat.prompt_server import PromptServer
from nodes.context import FoldersLike, InterruptFlag, ModelManagerLike, current_or_none

if TYPE_CHECKING:
    from config import Config
    from runtime import Runtime

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
    "comfy.model_patcher": "model_patcher.py",
    "comfy.sd": "comfy_sd.py",
    "comfy.lora": "comfy_lora.py",
    "comfy.ops": "comfy_ops.py",
    "comfy.latent_formats": "latent_formats.py",
    "comfy.model_base": "model_base.py",
    "comfy.ldm": None,
    "comfy.ldm.modules": None,
    "comfy.ldm.modules.attention": "ldm_attention.py",
    "comfy.ldm.modules.diffusionmodules": None,
    "comfy.ldm.modules.diffusionmodules.openaimodel": "ldm_openaimodel.py",
    "comfy.sdxl_clip": "sdxl_clip.py",
    "comfy.clip_vision": "clip_vision.py",
    "comfy.controlnet": "controlnet.py",
    "comfy.cldm": None,
    "comfy.cldm.cldm": "cldm.py",
    "comfy.model_detection": "model_detection.py",
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

    folders: FoldersLike
    models: ModelManagerLike | None
    interrupt: InterruptFlag
    config: Config
    prompt_server: PromptServer
    registry: Any = None  # the runtime's node registry (execution.validate_prompt)

    def current_folders(self) -> FoldersLike:
        """The running node's folders, else the runtime's."""
        ctx = current_or_none()
        return ctx.folders if ctx is not None and ctx.folders is not None else self.folders

    def current_models(self) -> ModelManagerLike | None:
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
    from nodes.comfy_api.media import Input, InputImpl, Types, media_modules

    root = _package("comfy_api", "Loom's implementation of ComfyUI's comfy_api package.")
    modules = {"comfy_api": root, **media_modules("comfy_api")}
    for version in COMFY_API_VERSIONS:
        name = f"comfy_api.{version}"
        package = _package(name, f"Loom's implementation of ComfyUI's {name} (schema API).")
        for attr, value in {"io": io, "ui": ui, "IO": io, "UI": ui, "ComfyExtension": ComfyExtension,
                            "ComfyAPI": ComfyAPI, "ComfyAPISync": ComfyAPISync,
                            f"ComfyAPI_{version}": ComfyAPI, "Input": Input, "InputImpl": InputImpl,
                            "Types": Types}.items():
            setattr(package, attr, value)
        setattr(root, version, package)
        modules.update({name: package, f"{name}.io": io, f"{name}.ui": ui, f"{name}._io": io, f"{name}._ui": ui})
        modules.update(media_modules(name))
    return modules


def _link_parent(name: str, module: types.ModuleType) -> None:
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def _install_placement(binding: CompatBinding) -> None:
    """Let MODEL/CLIP/VAE values called directly by pack code reach the running node's model manager: their
    `load_device`/`offload_device` and the placement of CLIP/VAE weights (`diffusion.patcher_api`)."""
    from diffusion import patcher_api

    def devices(_handle: Any) -> tuple[Any, Any]:
        models = binding.current_models()
        if models is None:
            here = _handle.current_loaded_device()
            return here, here
        return models.compute_device, models.offload_device

    @contextlib.contextmanager
    def place(objects: Any, working_memory: int) -> Iterator[None]:
        models = binding.current_models()
        handles = [o for o in objects if getattr(o, "handle", o) is not None]
        if models is None or not handles:
            yield
            return
        with models.use(handles, working_memory=working_memory):
            yield

    patcher_api.DEVICE_RESOLVER[:] = [devices]
    patcher_api.PLACER[:] = [place]


def install_compat(runtime: Runtime) -> CompatBinding:
    """Install the compatibility modules for `runtime` (its folders, models, interrupt flag,
    config and registry) into `sys.modules` and make a fresh `PromptServer.instance`; returns the binding."""
    prompt_server = PromptServer()
    PromptServer.instance = prompt_server
    binding = CompatBinding(folders=runtime.folders, models=runtime.models, interrupt=runtime.interrupt,
                            config=runtime.config, prompt_server=prompt_server, registry=runtime.registry)
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
    _install_placement(binding)
    from compat.comfy_extras import install_extras
    from compat.nodes_module import install_nodes_api

    install_extras(install_nodes_api(runtime.registry, binding).NODE_CLASS_MAPPINGS)
    return binding
