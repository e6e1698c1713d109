"""ComfyUI's newer schema node API (`comfy_api.latest`), re-implemented for Loom.

`io` holds the declaration classes (`ComfyNode`, `Schema`, the socket types with their
`Input`/`Output` factories, `NodeOutput`, `Hidden`), `ui` the helpers for what a node shows
in the editor, `extension` `ComfyExtension` and the running of `comfy_entrypoint()`, and
`adapt` turns a `ComfyNode` class into Loom's `NodeSpec`. The shapes follow ComfyUI's
`comfy_api/latest/_io.py` and `_ui.py`; the code is Loom's own. Packs reach these modules
under ComfyUI's names (`from comfy_api.latest import io, ui, ComfyExtension`) through
`compat/`.
"""
