"""A pack needing a part of ComfyUI that Loom's compatibility layer does not cover."""
import comfy.sd  # noqa: F401
