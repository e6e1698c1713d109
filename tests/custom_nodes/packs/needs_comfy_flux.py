"""A pack needing a part of ComfyUI that Loom's compatibility layer does not cover (Flux's internals)."""
import comfy.ldm.flux.model  # noqa: F401
