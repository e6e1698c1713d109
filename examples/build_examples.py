"""Writes the example workflows of `examples/` in both of ComfyUI's formats from one description each.

Each workflow is declared once below as a list of nodes (id, class, inputs, grid position, group); this script
writes `examples/<name>.api.json` (the API prompt, as `POST /prompt` takes it) and `examples/<name>.json` (the
editor document, as ComfyUI's frontend saves it: nodes with `widgets_values` in widget order — a seed followed by
its `control_after_generate` value, LoadImage followed by its upload button value — links, groups, format 0.4).
Widget order and socket types come from the live node registry; a node not registered yet falls back to the
declaration ComfyUI gives it (`FALLBACK`), so its files can be written before Loom implements it.

Run `python examples/build_examples.py` from the repository root after changing a workflow below;
`tests/test_examples.py` checks that every UI file converts to exactly its API twin.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from examples.workflows import WORKFLOWS, Step  # noqa: E402

GRID_X, GRID_Y, ORIGIN = 340, 230, (40, 60)
NODE_SIZE = (300, 190)

# ComfyUI's declarations (widget names in order, socket outputs) of nodes the registry may not hold yet.
FALLBACK: dict[str, tuple[list[str], list[str], str]] = {
    "VAEEncodeForInpaint": (["grow_mask_by"], ["LATENT"], "VAE Encode (for Inpainting)"),
    "InpaintModelConditioning": (["noise_mask"], ["CONDITIONING", "CONDITIONING", "LATENT"],
                                 "InpaintModelConditioning"),
    "LoraLoader": (["lora_name", "strength_model", "strength_clip"], ["MODEL", "CLIP"], "Load LoRA"),
    "CheckpointSave": (["filename_prefix"], [], "Save Checkpoint"),
    "ModelMergeSimple": (["ratio"], ["MODEL"], "ModelMergeSimple"),
    "UpscaleModelLoader": (["model_name"], ["UPSCALE_MODEL"], "Load Upscale Model"),
    "ImageUpscaleWithModel": ([], ["IMAGE"], "Upscale Image (using Model)"),
    "ControlNetLoader": (["control_net_name"], ["CONTROL_NET"], "Load ControlNet Model"),
    "ControlNetApplyAdvanced": (["strength", "start_percent", "end_percent"], ["CONDITIONING", "CONDITIONING"],
                                "Apply ControlNet"),
    "unCLIPCheckpointLoader": (["ckpt_name"], ["MODEL", "CLIP", "VAE", "CLIP_VISION"], "unCLIPCheckpointLoader"),
    "CLIPVisionEncode": (["crop"], ["CLIP_VISION_OUTPUT"], "CLIP Vision Encode"),
    "unCLIPConditioning": (["strength", "noise_augmentation"], ["CONDITIONING"], "unCLIPConditioning"),
    "GLIGENLoader": (["gligen_name"], ["GLIGEN"], "GLIGENLoader"),
    "GLIGENTextBoxApply": (["text", "width", "height", "x", "y"], ["CONDITIONING"], "GLIGENTextBoxApply"),
}
OUTPUT_NAMES = {("InpaintModelConditioning", 0): "positive", ("InpaintModelConditioning", 1): "negative",
                ("InpaintModelConditioning", 2): "latent", ("ControlNetApplyAdvanced", 0): "positive",
                ("ControlNetApplyAdvanced", 1): "negative"}


@dataclass
class Declaration:
    """What the builder needs of a node class: widget names (seed-like flagged), outputs, display name."""

    widgets: list[tuple[str, bool, Any]]
    outputs: list[tuple[str, str]]
    display_name: str
    order: list[str] = field(default_factory=list)

    def linked(self, step: Step) -> list[str]:
        """The step's linked inputs in declaration order (the editor's input slots)."""
        names = [n for n, v in step.inputs.items() if isinstance(v, list)]
        rank = {n: i for i, n in enumerate(self.order)}
        return sorted(names, key=lambda n: rank.get(n, len(rank)))


def declaration(registry: Any, class_type: str) -> Declaration:
    """The registry's declaration of `class_type`, else ComfyUI's from `FALLBACK`."""
    from executor.workflow_ui import is_seed_like, widget_inputs

    spec = registry.get(class_type)
    if spec is not None:
        widgets = [(w.name, is_seed_like(w), w.default) for w in widget_inputs(spec)]
        outputs = [(o.name or str(o.type), str(o.type)) for o in spec.outputs]
        return Declaration(widgets, outputs, spec.display_name or class_type, [i.name for i in spec.inputs])
    if class_type not in FALLBACK:
        raise KeyError(f"{class_type} is neither registered nor in FALLBACK")
    names, types, display = FALLBACK[class_type]
    outputs = [(OUTPUT_NAMES.get((class_type, i), t), t) for i, t in enumerate(types)]
    return Declaration([(n, False, None) for n in names], outputs, display)


@dataclass
class _Document:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    links: list[list[Any]] = field(default_factory=list)


def _api(steps: list[Step], decls: dict[str, Declaration]) -> dict[str, Any]:
    prompt = {}
    for step in steps:
        decl = decls[step.class_type]
        inputs = dict(step.inputs)
        for name, _seed, default in decl.widgets:
            if name not in inputs and default is not None:
                inputs[name] = default
        prompt[str(step.id)] = {"inputs": inputs, "class_type": step.class_type,
                                "_meta": {"title": step.title or decl.display_name}}
    return prompt


def _widgets_values(step: Step, decl: Declaration) -> list[Any]:
    values: list[Any] = []
    for name, seed_like, default in decl.widgets:
        values.append(step.inputs.get(name, default))
        if seed_like:
            values.append("fixed")
    if step.class_type == "LoadImage":
        values.append("image")  # the upload button's value, saved by the editor after the file name
    return values


def _ui(steps: list[Step], groups: dict[str, str], decls: dict[str, Declaration]) -> dict[str, Any]:
    doc = _Document()
    by_id = {step.id: step for step in steps}
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for step in steps:
        for target_slot, name in enumerate(decls[step.class_type].linked(step)):
            source, slot = int(step.inputs[name][0]), int(step.inputs[name][1])
            link_id = len(doc.links) + 1
            socket = decls[by_id[source].class_type].outputs[slot][1]
            doc.links.append([link_id, source, slot, step.id, target_slot, socket])
            out_links.setdefault((source, slot), []).append(link_id)
            in_links[(step.id, name)] = link_id
    order = _execution_order(steps)
    for step in steps:
        doc.nodes.append(_ui_node(step, order[step.id], decls, by_id, out_links, in_links))
    return {"last_node_id": max(by_id), "last_link_id": len(doc.links), "nodes": doc.nodes, "links": doc.links,
            "groups": _groups(steps, groups), "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
            "version": 0.4}


def _execution_order(steps: list[Step]) -> dict[int, int]:
    """Each node's place in a dependency order (the editor's `order` field): sources before their users."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(s.id for s in steps)
    graph.add_edges_from((int(v[0]), s.id) for s in steps for v in s.inputs.values() if isinstance(v, list))
    return {node: index for index, node in enumerate(nx.lexicographical_topological_sort(graph))}


def _ui_node(step: Step, order: int, decls: dict[str, Declaration], by_id: dict[int, Step],
             out_links: dict[tuple[int, int], list[int]], in_links: dict[tuple[int, str], int]) -> dict[str, Any]:
    decl = decls[step.class_type]
    inputs = []
    for name in decl.linked(step):
        value = step.inputs[name]
        socket = decls[by_id[int(value[0])].class_type].outputs[int(value[1])][1]
        inputs.append({"name": name, "type": socket, "link": in_links[(step.id, name)]})
    outputs = [{"name": name, "type": socket, "links": out_links.get((step.id, slot), []), "slot_index": slot}
               for slot, (name, socket) in enumerate(decl.outputs)]
    node: dict[str, Any] = {
        "id": step.id, "type": step.class_type, "pos": _pos(step), "size": list(NODE_SIZE), "flags": {},
        "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
        "properties": {"Node name for S&R": step.class_type}, "widgets_values": _widgets_values(step, decl)}
    if step.title:
        node["title"] = step.title
    return node


def _pos(step: Step) -> list[int]:
    return [ORIGIN[0] + step.col * GRID_X, ORIGIN[1] + step.row * GRID_Y]


def _groups(steps: list[Step], groups: dict[str, str]) -> list[dict[str, Any]]:
    """One editor group per named group, its box drawn around its nodes (title bar 35 px above)."""
    result = []
    for name, color in groups.items():
        members = [_pos(s) for s in steps if s.group == name]
        if not members:
            continue
        x0, y0 = min(p[0] for p in members) - 20, min(p[1] for p in members) - 55
        x1, y1 = max(p[0] for p in members) + NODE_SIZE[0] + 20, max(p[1] for p in members) + NODE_SIZE[1] + 20
        result.append({"title": name, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color, "font_size": 24,
                       "flags": {}})
    return result


def write_input_images(folder: Path = HERE / "input") -> list[Path]:
    """The small pictures the workflows load: a landscape-like photo, the same with a transparent hole (the
    inpainting mask, as an editor's mask painter saves it in the alpha channel) and a canny-style edge map."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.new("RGB", (64, 64))
    draw = ImageDraw.Draw(photo)
    for y in range(64):  # sky fading to a lighter horizon
        draw.line([(0, y), (63, y)], fill=(70 + y, 120 + y, 200))
    draw.polygon([(0, 44), (20, 22), (38, 40), (50, 28), (63, 42), (63, 63), (0, 63)], fill=(60, 90, 60))
    draw.ellipse([44, 6, 56, 18], fill=(250, 220, 120))
    hole = photo.convert("RGBA")
    ImageDraw.Draw(hole).rectangle([20, 30, 43, 53], fill=(0, 0, 0, 0))
    edges = Image.new("RGB", (64, 64))
    ImageDraw.Draw(edges).rectangle([14, 22, 50, 58], outline=(255, 255, 255))
    ImageDraw.Draw(edges).polygon([(10, 24), (32, 6), (54, 24)], outline=(255, 255, 255))
    paths = [folder / "example.png", folder / "inpaint_source.png", folder / "canny_edges.png"]
    for image, path in zip((photo, hole, edges), paths):
        image.save(path)
    return paths


def build(registry: Any, out_dir: Path = HERE) -> list[Path]:
    """Write every workflow's two files into `out_dir`; returns the paths written."""
    written = []
    for name, workflow in WORKFLOWS.items():
        decls = {s.class_type: declaration(registry, s.class_type) for s in workflow.steps}
        api = _api(workflow.steps, decls)
        ui = _ui(workflow.steps, workflow.groups, decls)
        for path, doc in ((out_dir / f"{name}.api.json", api), (out_dir / f"{name}.json", ui)):
            path.write_text(json.dumps(doc, indent=2) + "\n")
            written.append(path)
    return written


def main() -> None:
    """Build the registry (built-in nodes only) and write the files."""
    from nodes.registry import build_builtin_registry

    for path in build(build_builtin_registry()) + write_input_images():
        sys.stdout.write(f"{path.relative_to(HERE.parent)}\n")


if __name__ == "__main__":
    main()
