"""Files moving between the head and the workers, through Ray's object store (no new port).

Owns three steps: the head gathers the input files a prompt names (`gather_inputs`); a worker
puts them into its private folders and, when a node reports outputs (an `executed` event),
reads the files it wrote (`collect_outputs`); the head stores them under its own folders
(`OutputStore`) exactly as a local run would name them, and rewrites the event and history to
those names.

Naming (why outputs are renumbered on the head): a worker's output folder is emptied before each
prompt, so a save node there counts from 1; the head knows its own folder, so it gives each file
`next_counter(head folder, prefix)` plus the file's offset within that event — what a local run
would have written. Files without ComfyUI's `prefix_NNNNN_` pattern keep their names. PNG
metadata is written by the worker's save node from the same prompt and extra_data, so the bytes
are those of a local run.
"""
from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from folders import UnsafePathError, resolve_inside, split_annotation
from nodes.image_file_helpers import next_counter

FILE_KINDS = ("input", "output", "temp")
_COUNTED = re.compile(r"^(?P<stem>.+)_(?P<counter>\d{5,})_(?P<rest>\..*|)$")


@dataclass(frozen=True)
class FileBlob:
    """One file in transit: its folder kind, its path inside that folder (posix), its bytes."""

    kind: str
    name: str
    data: bytes


def _folder(folders: Any, kind: str) -> Path:
    return Path(getattr(folders, f"{kind}_directory"))


def gather_inputs(prompt: Mapping[str, Any], folders: Any) -> list[FileBlob]:
    """Every existing file of the head's input/output/temp folders that a literal input names
    (`x.png`, `sub/x.png [output]`, ...): what LoadImage and custom loaders will open."""
    blobs: dict[tuple[str, str], FileBlob] = {}
    for node in prompt.values():
        inputs = node.get("inputs", {}) if isinstance(node, Mapping) else {}
        for value in inputs.values() if isinstance(inputs, Mapping) else ():
            if not isinstance(value, str) or not value or len(value) > 1024:
                continue
            plain, kind = split_annotation(value)
            kind = kind or "input"
            try:
                path = resolve_inside(_folder(folders, kind), plain)
            except (UnsafePathError, ValueError, OSError):
                continue
            if (kind, plain) not in blobs and path.is_file():
                blobs[(kind, plain)] = FileBlob(kind, Path(plain).as_posix(), path.read_bytes())
    return list(blobs.values())


def reset_worker_folders(folders: Any, inputs: list[FileBlob]) -> None:
    """Empty the worker's input/output/temp folders and write the prompt's input files."""
    for kind in FILE_KINDS:
        root = _folder(folders, kind)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    for blob in inputs:
        target = resolve_inside(_folder(folders, blob.kind), blob.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.data)


def file_refs(ui: Any) -> Iterator[dict[str, Any]]:
    """The `{"filename", "subfolder", "type"}` dicts of a node's ui output (images, gifs, audio...)."""
    if isinstance(ui, Mapping):
        if isinstance(ui.get("filename"), str) and ui.get("type") in FILE_KINDS:
            yield ui  # type: ignore[misc]
            return
        for value in ui.values():
            yield from file_refs(value)
    elif isinstance(ui, (list, tuple)):
        for value in ui:
            yield from file_refs(value)


def _ref_name(ref: Mapping[str, Any]) -> str:
    sub = str(ref.get("subfolder") or "")
    return f"{sub}/{ref['filename']}" if sub else str(ref["filename"])


def collect_outputs(ui: Any, folders: Any) -> list[FileBlob]:
    """The output and temp files a worker's node reported, read from the worker's folders."""
    blobs: list[FileBlob] = []
    for ref in file_refs(ui):
        if ref["type"] == "input":
            continue
        try:
            path = resolve_inside(_folder(folders, ref["type"]), _ref_name(ref))
        except (UnsafePathError, ValueError):
            continue
        if path.is_file():
            blobs.append(FileBlob(ref["type"], _ref_name(ref), path.read_bytes()))
    return blobs


class OutputStore:
    """The head's side: stores workers' files under its folders, one prompt's renames at a time.

    `store(prompt_id, blobs)` writes them (never overwriting an output) and remembers the new
    names; `rewrite(prompt_id, ui)` gives a ui dict with those names; `discard(prompt_id)`
    deletes what a lost worker's attempt stored, so the re-run gets the same names and no
    duplicates; `forget(prompt_id)` drops the bookkeeping once history is written.
    """

    def __init__(self, folders: Any) -> None:
        self.folders = folders
        self._lock = threading.Lock()
        self._renamed: dict[str, dict[tuple[str, str], str]] = {}
        self._written: dict[str, list[Path]] = {}

    def store(self, prompt_id: str, blobs: list[FileBlob]) -> None:
        with self._lock:
            renamed = self._renamed.setdefault(prompt_id, {})
            written = self._written.setdefault(prompt_id, [])
            bases: dict[tuple[str, str], tuple[int, int]] = {}
            for blob in blobs:
                if blob.kind not in ("output", "temp"):
                    continue
                name, path = self._write(blob, bases)
                renamed[(blob.kind, blob.name)] = name
                written.append(path)

    def _write(self, blob: FileBlob, bases: dict[tuple[str, str], tuple[int, int]]) -> tuple[str, Path]:
        root = _folder(self.folders, blob.kind)
        sub, _, filename = blob.name.rpartition("/")
        folder = resolve_inside(root, sub) if sub else root.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        match = _COUNTED.match(filename) if blob.kind == "output" else None
        if match is None:
            (folder / filename).write_bytes(blob.data)
            return blob.name, folder / filename
        stem, counter = match["stem"], int(match["counter"])
        first_here, first_there = bases.setdefault((sub, stem), (next_counter(folder, stem), counter))
        number = first_here + counter - first_there
        while True:  # exclusive create: a concurrent writer never loses a file
            candidate = f"{stem}_{number:05}_{match['rest']}"
            try:
                with open(folder / candidate, "xb") as handle:
                    handle.write(blob.data)
                break
            except FileExistsError:
                number += 1
        return (f"{sub}/{candidate}" if sub else candidate), folder / candidate

    def rewrite(self, prompt_id: str, ui: Any) -> Any:
        """A copy of `ui` whose file references carry the names the head stored them under."""
        with self._lock:
            renamed = dict(self._renamed.get(prompt_id, {}))
        return _rewrite(ui, renamed)

    def discard(self, prompt_id: str) -> None:
        with self._lock:
            self._renamed.pop(prompt_id, None)
            for path in self._written.pop(prompt_id, []):
                path.unlink(missing_ok=True)

    def forget(self, prompt_id: str) -> None:
        with self._lock:
            self._renamed.pop(prompt_id, None)
            self._written.pop(prompt_id, None)


def _rewrite(ui: Any, renamed: Mapping[tuple[str, str], str]) -> Any:
    if isinstance(ui, Mapping):
        out = {k: _rewrite(v, renamed) for k, v in ui.items()}
        if isinstance(ui.get("filename"), str) and ui.get("type") in FILE_KINDS:
            new = renamed.get((ui["type"], _ref_name(ui)))
            if new is not None:
                sub, _, filename = new.rpartition("/")
                out["filename"], out["subfolder"] = filename, sub
        return out
    if isinstance(ui, list):
        return [_rewrite(v, renamed) for v in ui]
    return ui
