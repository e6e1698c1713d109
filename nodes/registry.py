"""The node registry: the set of node declarations one Loom instance knows, by class type.

A `NodeRegistry` is an ordinary object built in `main.py` (built-ins from the explicit list
in `nodes/builtin.py`, then custom packs) and passed to whoever needs it; there is no
module-level registry. Registration checks each declaration (`SpecError` naming the node and
the problem). When two packs declare the same class type, the first one registered (the
built-in) is kept and the collision is recorded in `.collisions`.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from nodes.classic import adapt_classic
from nodes.spec import FileIndex, Node, NodeSpec, SpecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collision:
    """A class type declared twice: `kept_pack`'s declaration stays, `rejected_pack`'s is dropped."""

    class_type: str
    kept_pack: str
    rejected_pack: str


class NodeRegistry:
    """Node declarations by class type, in registration order."""

    def __init__(self) -> None:
        self._specs: dict[str, NodeSpec] = {}
        self._packs: dict[str, str] = {}
        self.collisions: list[Collision] = []

    def register(self, node: type | NodeSpec, *, pack: str = "builtin", display_name: str | None = None,
                 class_type: str | None = None) -> NodeSpec | None:
        """Add a node: a Loom `Node` subclass, a ComfyUI-style class, or a ready `NodeSpec`.

        `class_type` names a ComfyUI class (its NODE_CLASS_MAPPINGS key; the class name when
        omitted). Returns the registered spec, or None when the class type was already taken
        (recorded in `.collisions`). Raises `SpecError` for a malformed declaration.
        """
        spec = self._to_spec(node, pack=pack, display_name=display_name, class_type=class_type)
        existing = self._packs.get(spec.class_type)
        if existing is not None:
            self.collisions.append(Collision(spec.class_type, existing, pack))
            log.warning("node %s from pack %s ignored: already declared by pack %s",
                        spec.class_type, pack, existing)
            return None
        self._specs[spec.class_type] = spec
        self._packs[spec.class_type] = pack
        return spec

    def register_all(self, nodes: Iterable[type | NodeSpec], *, pack: str = "builtin") -> list[NodeSpec]:
        """Register several nodes; returns the specs that were added."""
        added = [self.register(node, pack=pack) for node in nodes]
        return [spec for spec in added if spec is not None]

    @staticmethod
    def _to_spec(node: type | NodeSpec, *, pack: str, display_name: str | None,
                 class_type: str | None) -> NodeSpec:
        if isinstance(node, NodeSpec):
            spec = node
            if class_type is not None and class_type != spec.class_type:
                spec = dataclasses.replace(spec, class_type=class_type)
        elif isinstance(node, type) and issubclass(node, Node):
            spec = node.spec()
            if class_type is not None and class_type != spec.class_type:
                spec = dataclasses.replace(spec, class_type=class_type)
        elif isinstance(node, type) and hasattr(node, "INPUT_TYPES"):
            module = "nodes" if pack == "builtin" else f"custom_nodes.{pack}"
            spec = adapt_classic(node, class_type or node.__name__, python_module=module)
        else:
            raise SpecError(f"cannot register {node!r} (pack {pack}): expected a Node subclass, "
                            f"a ComfyUI-style class with INPUT_TYPES, or a NodeSpec")
        if display_name is not None and display_name != spec.display_name:
            spec = dataclasses.replace(spec, display_name=display_name)
        return spec

    def get(self, class_type: str) -> NodeSpec | None:
        return self._specs.get(class_type)

    def __getitem__(self, class_type: str) -> NodeSpec:
        return self._specs[class_type]

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def specs(self) -> list[NodeSpec]:
        return list(self._specs.values())

    def pack_of(self, class_type: str) -> str | None:
        """The pack that declared `class_type` ("builtin" for Loom's own nodes), or None."""
        return self._packs.get(class_type)

    def object_info(self, files: FileIndex | None = None) -> dict[str, Any]:
        """`GET /object_info`: every node's entry in ComfyUI's shape, combos listed now.

        A node whose entry cannot be built (a custom node's INPUT_TYPES failing at request
        time) is left out and logged, as ComfyUI does, rather than failing the whole answer.
        """
        out: dict[str, Any] = {}
        for class_type, spec in self._specs.items():
            try:
                out[class_type] = spec.object_info(files)
            except Exception:  # third-party code: one broken node must not hide all the others
                log.exception("cannot describe node %s for /object_info", class_type)
        return out


def build_builtin_registry(modules: Iterable[str] | None = None) -> NodeRegistry:
    """A registry holding Loom's built-in nodes (the modules of `nodes.builtin.BUILTIN_MODULES`).

    Each module exports `NODES: list[type]`. A module that is listed but not yet present is
    an error (ImportError), so a typo in the list fails at start-up.
    """
    from nodes.builtin import BUILTIN_MODULES

    registry = NodeRegistry()
    for name in (BUILTIN_MODULES if modules is None else modules):
        module = importlib.import_module(name)
        nodes = getattr(module, "NODES", None)
        if nodes is None:
            raise SpecError(f"built-in node module {name} has no NODES list")
        registry.register_all(nodes, pack="builtin")
    return registry
