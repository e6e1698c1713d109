"""The headless runner: `python main.py run WORKFLOW [--set NODE.INPUT=VALUE ...]`.

Loads the workflow (API or UI JSON, or a PNG with an embedded workflow), applies the `--set`
overrides, validates, runs it with a progress display on stderr (one line per node, per
step), prints the paths of the files it wrote on stdout, and returns the exit status:
0 success, 1 a node failed, 2 the workflow is unreadable or invalid, 130 interrupted.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, TextIO

from executor.events import Event, PreviewImage
from executor.submission import Submission, SubmissionError, validate_submission
from executor.workflow import WorkflowError, load_workflow_file

if TYPE_CHECKING:
    from runtime import Runtime

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
FILE_KEYS = ("images", "gifs", "videos", "audio", "animated", "3d", "files")


class OverrideError(ValueError):
    """A `--set` names a node or input the workflow does not have."""


def parse_value(text: str) -> Any:
    """A `--set` value: JSON when it parses (`42`, `1.5`, `true`, `"x"`, `[1]`), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def find_node(prompt: Mapping[str, Any], name: str) -> str:
    """The node id for `name`: a node id, or the title of exactly one node."""
    if name in prompt:
        return name
    matches = [k for k, v in prompt.items() if (v.get("_meta") or {}).get("title") == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise OverrideError(f"--set: title {name!r} is ambiguous: nodes {', '.join(matches)} carry it; use a node id")
    titles = sorted({f"{k} ({(v.get('_meta') or {}).get('title') or v.get('class_type')})" for k, v in prompt.items()})
    raise OverrideError(f"--set: no node with id or title {name!r}; nodes: {', '.join(titles)}")


def apply_overrides(prompt: dict[str, Any], overrides: Iterable[Any], registry: Any) -> None:
    """Set `NODE.INPUT=VALUE` overrides (objects with `.node`, `.input`, `.value`) in place."""
    for override in overrides:
        node_id = find_node(prompt, override.node)
        node = prompt[node_id]
        spec = registry.get(node.get("class_type")) if registry is not None else None
        known = [i.name for i in spec.inputs if not i.hidden] if spec is not None else list(node.get("inputs", {}))
        if override.input not in known:
            raise OverrideError(f"--set: node {node_id} ({node.get('class_type')}) has no input "
                                f"{override.input!r}; its inputs: {', '.join(known) or 'none'}")
        node.setdefault("inputs", {})[override.input] = parse_value(override.value)


def format_validation(error: Mapping[str, Any] | None, node_errors: Mapping[str, Any],
                      prompt: Mapping[str, Any]) -> str:
    """A readable account of validation errors, one line per error."""
    lines = []
    if error is not None:
        lines.append(f"error: {error['message']}")
    for node_id, entry in node_errors.items():
        node = prompt.get(node_id) or {}
        title = (node.get("_meta") or {}).get("title") if isinstance(node, Mapping) else None
        label = f"node {node_id} ({entry['class_type']}{', ' + repr(title) if title else ''})"
        for error in entry["errors"]:
            details = f": {error['details']}" if error.get("details") else ""
            lines.append(f"  {label}: {error['message']}{details}")
    if error is not None and not node_errors and error.get("details"):
        lines.append(f"  {error['details']}")
    return "\n".join(lines)


def format_execution_error(error: Mapping[str, Any]) -> str:
    """A node's failure: where, what, and the last lines of its traceback."""
    lines = [f"error: node {error.get('node_id')} ({error.get('node_type')}) failed: "
             f"{error.get('exception_type')}: {error.get('exception_message')}"]
    tb = error.get("traceback") or []
    if tb:
        lines.append("traceback (most recent call last):")
        lines.extend("  " + line.rstrip().replace("\n", "\n  ") for line in tb[-4:])
    return "\n".join(lines)


class ProgressDisplay:
    """An `EventSink` drawing progress on a text stream: a line per node, a bar per step."""

    def __init__(self, prompt: Mapping[str, Any], stream: TextIO) -> None:
        self.prompt = prompt
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.count = 0
        self._open_bar = False

    def __call__(self, item: Event | PreviewImage) -> None:
        if isinstance(item, PreviewImage):
            return
        if item.type == "execution_cached" and item.data.get("nodes"):
            self._line(f"cached: {len(item.data['nodes'])} node(s) reused")
        elif item.type == "executing" and item.data.get("node") is not None:
            self.count += 1
            node_id = item.data["node"]
            node = self.prompt.get(node_id) or {}
            title = (node.get("_meta") or {}).get("title")
            name = node.get("class_type", "?") + (f" '{title}'" if title and title != node.get("class_type") else "")
            self._line(f"[{self.count}] node {node_id} {name}")
        elif item.type == "progress":
            self._bar(int(item.data.get("value", 0)), int(item.data.get("max", 0) or 0))
        elif item.type == "execution_success":
            self._line(f"done in {time.perf_counter() - self.started:.2f} s")

    def _bar(self, value: int, total: int) -> None:
        width = 30
        filled = width * value // total if total else width
        text = f"    [{'#' * filled}{'.' * (width - filled)}] {value}/{total}"
        if self.tty:
            self.stream.write("\r" + text)
            self._open_bar = value < total
            if not self._open_bar:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self._open_bar:
            self.stream.write("\n")
            self._open_bar = False
        self.stream.write(text + "\n")
        self.stream.flush()


def output_paths(outputs: Mapping[str, Any], folders: Any) -> list[Path]:
    """The files the ui outputs name (`{filename, subfolder, type}` entries)."""
    paths = []
    for ui in outputs.values():
        for key in FILE_KEYS:
            for item in (ui.get(key) or []) if isinstance(ui, Mapping) else []:
                if not isinstance(item, Mapping) or "filename" not in item:
                    continue
                kind = item.get("type", "output")
                base = folders.directory_of_type(kind) if folders is not None and \
                    hasattr(folders, "directory_of_type") else None
                base = base or (Path(getattr(folders, "output_directory", ".")) if folders is not None else Path("."))
                paths.append(Path(base) / (item.get("subfolder") or "") / item["filename"])
    return paths


def run_headless(runtime: Runtime, workflow: Path, overrides: Iterable[Any] = (), *, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> int:
    """Run one workflow file to completion; returns the process exit status."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        prompt, ui = load_workflow_file(workflow, runtime.registry)
        apply_overrides(prompt, overrides, runtime.registry)
    except (WorkflowError, OverrideError) as error:
        err.write(f"error: {error}\n")
        return EXIT_INVALID
    extra = {"extra_pnginfo": {"workflow": ui}} if ui is not None else {}
    draft = Submission(prompt=prompt, prompt_id=uuid.uuid4().hex, extra_data=extra)
    try:
        checked = validate_submission(draft, runtime.registry, runtime.folders)
    except SubmissionError as refused:
        err.write(format_validation(refused.error, refused.node_errors, prompt) + "\n")
        return EXIT_INVALID
    if checked.node_errors:
        err.write(format_validation(None, checked.node_errors, prompt) + "\n")
    display = ProgressDisplay(checked.prompt, err)
    try:
        result = runtime.executor.execute(checked.prompt, checked.prompt_id, extra_data=checked.extra_data,
                                          outputs_to_execute=checked.outputs, emit=display, converted=True)
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    _print_outputs(result.outputs, runtime.folders, out, err)
    if result.status == "error":
        err.write(format_execution_error(result.error or {}) + "\n")
        return EXIT_FAILED
    if result.status == "interrupted":
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _print_outputs(outputs: Mapping[str, Any], folders: Any, out: TextIO, err: TextIO) -> None:
    """File paths on stdout (one per line, for scripts); text previews on stderr."""
    for node_id, ui in outputs.items():
        for text in (ui.get("text") or []) if isinstance(ui, Mapping) else []:
            err.write(f"node {node_id}: {text}\n")
    for path in output_paths(outputs, folders):
        out.write(f"{path}\n")
    out.flush()
