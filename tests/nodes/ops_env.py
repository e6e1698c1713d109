"""A Loom instance for the torch-only node tests (conditioning/latent/image/mask operations): real folders,
the built-in registry plus two test-only nodes — `Feed` puts a Python value (tensor, latent dict, conditioning)
into the graph, `Grab` keeps what reaches it — and the real executor."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from executor.events import Event, PreviewImage
from executor.run import ExecutionResult, Executor
from folders import Folders
from nodes.registry import build_builtin_registry
from nodes.spec import Input, Node, Output, String


class OpsEnv:
    """Loom under `base`; `value(class_type, inputs)` runs one node through the executor and returns its output."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.folders = Folders.for_base(base)
        self.registry = build_builtin_registry()
        self.fed: dict[str, Any] = {}
        self.grabbed: list[Any] = []
        self.registry.register(_feed_node(self.fed))
        self.registry.register(_grab_node(self.grabbed))
        self.executor = Executor(self.registry, folders=self.folders)
        self.events: list[Any] = []
        self.count = 0

    def run(self, prompt: dict[str, Any]) -> ExecutionResult:
        self.count += 1
        self.events = []
        return self.executor.execute(prompt, f"p{self.count}", emit=self.events.append)

    def ok(self, prompt: dict[str, Any]) -> ExecutionResult:
        result = self.run(prompt)
        assert result.status == "success", result.error and (result.error["exception_message"],
                                                             "".join(result.error["traceback"]))
        return result

    def prompt(self, class_type: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """A prompt with node "n" of `class_type`: tensor/dict/list inputs are fed through `Feed` nodes."""
        prompt: dict[str, Any] = {}
        wired: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, (int, float, str, bool)):
                wired[name] = value
            else:
                key = f"feed_{name}_{self.count}"
                self.fed[key] = value
                prompt[f"f_{name}"] = {"class_type": "Feed", "inputs": {"key": key}}
                wired[name] = [f"f_{name}", 0]
        prompt["n"] = {"class_type": class_type, "inputs": wired}
        return prompt

    def value(self, class_type: str, inputs: dict[str, Any], index: int = 0) -> Any:
        """Run `class_type` on `inputs` through the executor and return output `index`."""
        prompt = self.prompt(class_type, inputs)
        prompt["grab"] = {"class_type": "Grab", "inputs": {"value": ["n", index]}}
        self.ok(prompt)
        return self.grabbed[-1]

    def previews(self) -> list[PreviewImage]:
        return [e for e in self.events if isinstance(e, PreviewImage)]

    def event_data(self, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if isinstance(e, Event) and e.type == kind]

    def info(self, class_type: str) -> dict[str, Any]:
        return self.registry.object_info(self.folders)[class_type]


def _feed_node(box: dict[str, Any]) -> type:
    class Feed(Node):
        """Test-only source node: outputs the value stored under `key`."""

        INPUTS = (String("key", ""),)
        OUTPUTS = (Output("*"),)

        def execute(self, key: str) -> tuple[Any]:
            return (box[key],)

    return Feed


def _grab_node(box: list[Any]) -> type:
    class Grab(Node):
        """Test-only output node that keeps its input."""

        OUTPUT_NODE = True
        INPUTS = (Input("value", "*"),)
        OUTPUTS = ()

        def execute(self, value: Any) -> tuple:
            box.append(value)
            return ()

        @staticmethod
        def fingerprint(value: Any = None) -> float:
            return float("nan")

    return Grab
