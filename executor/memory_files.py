"""The file-level model cache: one loaded copy of a model file in RAM, however many workflows use it.

This module owns `ModelFileCache`, which maps (resolved path, mtime, size, dtype, part) to a *weak* reference to
what a loader built from that file (a base `nn.Module`, or any weak-referenceable object). While any cached node
output or handle still holds the object, a second loader node asking for the same file gets the same object
instead of a second copy; once nothing holds it, it is freed and the next request loads it again. A file changed
on disk (new mtime or size) is a new key. The manager in `executor/memory.py` owns one instance (`manager.files`)
and is told after each fresh load (`after_load`: it returns the load's freed host memory to the system).
"""
from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import torch


class ModelFileCache:
    """Weak (path, mtime, size, dtype, part) → loaded object map, so a file is never loaded twice into RAM."""

    def __init__(self, on_load: Callable[[str, Any], None] | None = None,
                 after_load: Callable[[], Any] | None = None) -> None:
        # `on_load(part, obj)` sees every freshly loaded object (the manager pools shared text-encoder weights);
        # `after_load()` runs once after each load that was not a hit.
        self.on_load = on_load
        self.after_load = after_load
        self._refs: dict[Hashable, weakref.ref] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.loads = 0

    @staticmethod
    def key(path: str | os.PathLike[str], dtype: torch.dtype | str | None = None, part: str = "") -> Hashable:
        """The identity of one loaded part of one version of a file."""
        resolved = Path(path).resolve()
        st = resolved.stat()
        return (str(resolved), st.st_mtime_ns, st.st_size, str(dtype), part)

    def get(self, path: str | os.PathLike[str], dtype: torch.dtype | str | None = None, part: str = "") -> Any:
        """The live object loaded from this file (and dtype, part), or None."""
        k = self.key(path, dtype, part)
        with self._lock:
            ref = self._refs.get(k)
            obj = ref() if ref is not None else None
            if obj is None:
                self._refs.pop(k, None)
            return obj

    def put(self, path: str | os.PathLike[str], obj: Any, dtype: torch.dtype | str | None = None,
            part: str = "") -> None:
        """Remember `obj` (weakly) as what `path` loads to."""
        k = self.key(path, dtype, part)
        with self._lock:
            self._refs[k] = weakref.ref(obj, self._forget(k))

    def get_or_load(self, path: str | os.PathLike[str], load: Callable[[], Any],
                    dtype: torch.dtype | str | None = None, part: str = "") -> Any:
        """The cached object, or `load()`'s result, remembered for the next caller."""
        obj = self.get(path, dtype, part)
        if obj is not None:
            self.hits += 1
            return obj
        obj = load()
        self.loads += 1
        if self.on_load is not None:
            self.on_load(part, obj)
        self.put(path, obj, dtype, part)
        self._loaded()
        return obj

    def get_or_load_parts(self, path: str | os.PathLike[str], parts: Sequence[str],
                          load: Callable[[], dict[str, Any]],
                          dtype: torch.dtype | str | None = None) -> dict[str, Any]:
        """For files that load to several objects at once (a checkpoint: "unet", "clip", "vae"): all `parts` from
        the cache when every one is alive, else `load()` (a dict part → object) remembered part by part."""
        found = {p: self.get(path, dtype, p) for p in parts}
        if all(v is not None for v in found.values()):
            self.hits += 1
            return found
        loaded = load()
        self.loads += 1
        for p in parts:
            if loaded.get(p) is not None:
                if self.on_load is not None:
                    self.on_load(p, loaded[p])
                self.put(path, loaded[p], dtype, p)
        self._loaded()
        return loaded

    def _loaded(self) -> None:
        if self.after_load is not None:
            self.after_load()

    def _forget(self, k: Hashable) -> Callable[[weakref.ref], None]:
        def drop(ref: weakref.ref) -> None:
            # Called by the garbage collector; only drop the entry if it still points at the dead object.
            if self._refs.get(k) is ref:
                self._refs.pop(k, None)
        return drop

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for r in self._refs.values() if r() is not None)
