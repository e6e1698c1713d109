"""The explicit list of Loom's built-in node modules, registered in this order.

Each module exports `NODES: list[type]` (Loom `Node` subclasses or ComfyUI-style classes).
`nodes.registry.build_builtin_registry()` imports them; adding a node family means adding its
module here (loaders, conditioning, latent, sampling, mask, lora, upscale, controlnet, ...).
"""
from __future__ import annotations

BUILTIN_MODULES: list[str] = [
    "nodes.primitives",
    "nodes.image",
    "nodes.loaders",
    "nodes.gguf",
    "nodes.conditioning",
    "nodes.latent",
    "nodes.vae_nodes",
    "nodes.sampling",
    "nodes.sampling_custom",
    "nodes.conditioning_ops",
    "nodes.latent_ops",
    "nodes.mask",
    "nodes.image_ops",
    "nodes.lora",
    "nodes.model_merging",
    "nodes.model_patches",
    "nodes.inpaint",
    "nodes.controlnet",
    "nodes.upscale",
    "nodes.clip_vision",
    "nodes.gligen",
    "nodes.safety",
    "nodes.conditioning_sdxl",
    "nodes.latent_operations",
    "nodes.guidance",
    "nodes.sampler_nodes",
    "nodes.sigma_nodes",
    "nodes.rebatch",
    "nodes.attention_multiply",
    "nodes.inpaint_models",
    "nodes.token_patches",
    "nodes.hooks",
    "nodes.model_sampling_advanced",
    "nodes.model_merging_sdxl",
    "nodes.guidance_pag",
    "nodes.strings",
    "nodes.image_transform",
    "nodes.image_filters",
    "nodes.compositing",
    "nodes.image_files",
    "nodes.sd3",
    "nodes.model_merging_sd3",
    "nodes.step_cache",
    "nodes.torch_compile",
]
