"""A Loom instance for node tests on tiny checkpoint files: temporary base folder, real folders, registry, model
manager (CPU policy) and executor; helpers to build txt2img prompts and run them collecting events."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from executor.events import Event, PreviewImage
from executor.memory import MemoryPolicy, ModelManager
from executor.run import ExecutionResult, Executor
from folders import Folders
from nodes.registry import build_builtin_registry
from nodes.spec import Input, Node
from tests.fixtures.tiny_checkpoints import write_tiny_checkpoint

CKPT = "tiny-sd15.safetensors"


class SDEnv:
    """Loom under `base` with a tiny SD1.5 checkpoint in models/checkpoints."""

    def __init__(self, base: Path, family: str = "sd15", name: str = CKPT, policy: MemoryPolicy | None = None
                 ) -> None:
        self.base = base
        write_tiny_checkpoint(base / "models" / "checkpoints" / name, family=family)
        self.folders = Folders.for_base(base)
        self.registry = build_builtin_registry()
        self.models = ModelManager(policy or MemoryPolicy())
        self.executor = Executor(self.registry, folders=self.folders, models=self.models)
        self.events: list[Any] = []
        self.count = 0
        self.grabbed: list[Any] = []
        self.registry.register(_grab_node(self.grabbed))

    def run(self, prompt: dict[str, Any]) -> ExecutionResult:
        self.count += 1
        self.events = []
        return self.executor.execute(prompt, f"p{self.count}", emit=self.events.append)

    def ok(self, prompt: dict[str, Any]) -> ExecutionResult:
        result = self.run(prompt)
        assert result.status == "success", result.error and (result.error["exception_message"],
                                                             "".join(result.error["traceback"]))
        return result

    def event_data(self, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if isinstance(e, Event) and e.type == kind]

    def previews(self) -> list[PreviewImage]:
        return [e for e in self.events if isinstance(e, PreviewImage)]

    def value(self, prompt: dict[str, Any], node_id: str, index: int = 0) -> Any:
        """Run `prompt` plus an output node that keeps output `index` of `node_id`, and return that value."""
        full = dict(prompt)
        full["grab"] = {"class_type": "Grab", "inputs": {"value": [node_id, index]}}
        self.ok(full)
        return self.grabbed[-1]


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
            return float("nan")  # always run, so every call hands the value over

    return Grab


def txt2img(ckpt: str = CKPT, seed: int = 1, steps: int = 2, size: int = 32, cfg: float = 5.0,
            sampler: str = "euler", scheduler: str = "normal", text: str = "a red cube",
            negative: str = "blurry") -> dict[str, Any]:
    """The default text-to-image graph (ids as in ComfyUI's default workflow)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                                                   "scheduler": scheduler, "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t2i"}},
    }
