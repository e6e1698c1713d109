"""The output cache: node outputs stored by signature, bounded by a RAM budget and LRU order.

A node's signature is a pure function (STYLE.md §8) of its class, its constant inputs, the
signatures and slots of the outputs linked into it and its `IS_CHANGED` value (a NaN value
means "always rerun"; not-idempotent nodes add their id). Signatures are computed once per
prompt in topological order, so the cost is linear in the graph size, and because outputs are
stored by signature rather than node id, the same partial graph is reused across prompts and
across node ids. Cached values are treated as immutable: nodes must not modify their inputs.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from executor.plan import as_link


@dataclass(frozen=True)
class CachedOutput:
    """One node's outputs: for each output slot the list of values (one per list element, see
    `executor/lists.py`), its ui dict (or None) and its estimated size in bytes."""

    values: tuple[list[Any], ...]
    ui: dict[str, Any] | None = None
    size: int = 0


class OutputCache:
    """Signature → `CachedOutput`, least recently used first out.

    `ram_budget_bytes` bounds the summed estimated size of the entries (`--cache-ram GB`),
    `lru_size` the number of entries (`--cache-lru N`); `enabled=False` (`--cache-none`)
    stores nothing, so every prompt runs in full.
    """

    def __init__(self, ram_budget_bytes: int | None = None, lru_size: int | None = None, enabled: bool = True) -> None:
        self.ram_budget_bytes = ram_budget_bytes
        self.lru_size = lru_size
        self.enabled = enabled
        self._entries: OrderedDict[str, CachedOutput] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, signature: str) -> bool:
        return signature in self._entries

    def get(self, signature: str) -> CachedOutput | None:
        """The entry for `signature` (marking it recently used), or None."""
        entry = self._entries.get(signature)
        if entry is not None:
            self._entries.move_to_end(signature)
        return entry

    def put(self, signature: str, entry: CachedOutput) -> None:
        """Store an entry, then evict the least recently used ones beyond the budgets."""
        if not self.enabled:
            return
        if self.ram_budget_bytes is not None and entry.size > self.ram_budget_bytes:
            return
        old = self._entries.pop(signature, None)
        if old is not None:
            self.total_bytes -= old.size
        self._entries[signature] = entry
        self.total_bytes += entry.size
        self._evict()

    def _evict(self) -> None:
        while self._entries and (
                (self.lru_size is not None and len(self._entries) > self.lru_size)
                or (self.ram_budget_bytes is not None and self.total_bytes > self.ram_budget_bytes)):
            _, old = self._entries.popitem(last=False)
            self.total_bytes -= old.size

    def clear(self) -> None:
        """Drop every entry (POST /free with `free_memory`)."""
        self._entries.clear()
        self.total_bytes = 0


def is_plain(value: Any, depth: int = 0) -> bool:
    """True for JSON data (what a submitted prompt holds); node expansion may also put live
    objects (tensors, models) into the inputs of the nodes it adds."""
    if value is None or type(value) in (str, int, float, bool):
        return True
    if depth > 32:
        return False
    if type(value) in (list, tuple):
        return all(is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and is_plain(v, depth + 1) for k, v in value.items())
    return False


def _canonical(value: Any) -> str:
    """Text identifying a constant input. A live object has no stable text (its repr may
    abbreviate), so it gets a fresh token: such a node is never taken from the cache, as
    ComfyUI treats unhashable inputs."""
    if value is None or type(value) in (str, int, float, bool):
        return repr(value)
    if not is_plain(value):
        return f"object:{uuid.uuid4().hex}"
    try:
        return json.dumps(value, sort_keys=True)
    except (ValueError, TypeError):
        return f"object:{uuid.uuid4().hex}"


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def node_signature(class_type: str, inputs: Mapping[str, Any], input_signatures: Mapping[str, str],
                   changed: Any = None, node_id: str | None = None) -> str:
    """The signature of one node: `input_signatures` maps each linked source node id to its
    signature; `changed` is its IS_CHANGED value (NaN: a fresh signature every time);
    `node_id` is given for not-idempotent nodes."""
    parts: list[str] = [class_type]
    for name in sorted(inputs):
        value = inputs[name]
        link = as_link(value)
        if link is not None:
            parts.append(f"{name}=@{input_signatures.get(link[0], 'missing:' + link[0])}:{link[1]}")
        else:
            parts.append(f"{name}={_canonical(value)}")
    if changed is not None:
        parts.append("changed=" + (f"nan:{uuid.uuid4().hex}" if is_nan(changed) else _canonical(changed)))
    if node_id is not None:
        parts.append(f"id={node_id}")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def signatures_in_order(prompt: Mapping[str, Any], order: Iterable[str], changed: Mapping[str, Any],
                        not_idempotent: Iterable[str] = ()) -> dict[str, str]:
    """Signatures of the nodes in `order` (topological), each computed once from its sources'."""
    keyed_by_id = set(not_idempotent)
    signatures: dict[str, str] = {}
    for node_id in order:
        node = prompt[node_id]
        signatures[node_id] = node_signature(node["class_type"], node.get("inputs") or {}, signatures,
                                             changed.get(node_id), node_id if node_id in keyed_by_id else None)
    return signatures


def estimate_size(value: Any, _depth: int = 0) -> int:
    """A rough byte size of an output value: tensors and arrays by their buffers, containers
    by their items (a few levels deep), everything else by `sys.getsizeof`."""
    if _depth > 4:
        return 64
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int) and not isinstance(value, (bytes, bytearray)):
        return nbytes
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        try:
            return int(value.element_size() * value.nelement())
        except (TypeError, RuntimeError):
            return 64
    if isinstance(value, (list, tuple, set, frozenset)):
        return 56 + sum(estimate_size(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return 64 + sum(estimate_size(v, _depth + 1) for v in value.values())
    if hasattr(value, "size") and hasattr(value, "mode") and hasattr(value, "getbands"):
        width, height = value.size
        return int(width * height * len(value.getbands()))
    try:
        return sys.getsizeof(value)
    except TypeError:
        return 64
