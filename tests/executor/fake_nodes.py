"""Torch-free fake nodes and a tiny registry for the executor's tests (STYLE.md §15).

Each fake counts its calls in `CALLS` (reset by the `calls` fixture in the tests) so tests can
tell what ran and what came from the cache. `SD_NODES` declares nodes with the same inputs and
outputs as ComfyUI's CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler,
VAEDecode and SaveImage, for UI→API conversion tests of the default workflow.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator

from nodes.context import current
from nodes.spec import (Boolean, Combo, FileList, Float, Hidden, Input, Int, Node, NodeSpec, Output, String)

CALLS: Counter[str] = Counter()


class FakeRegistry:
    """The part of `nodes.registry.NodeRegistry` the executor uses, built from node classes."""

    def __init__(self, nodes: Iterable[type | NodeSpec]) -> None:
        self._specs: dict[str, NodeSpec] = {}
        for node in nodes:
            spec = node if isinstance(node, NodeSpec) else node.spec()
            self._specs[spec.class_type] = spec

    def get(self, class_type: str) -> NodeSpec | None:
        return self._specs.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


class FInt(Node):
    INPUTS = [Int("value", 0, min=-1000, max=1000)]
    OUTPUTS = [Output("INT")]

    def execute(self, value: int) -> tuple[int]:
        CALLS["FInt"] += 1
        return (value,)


class FFloat(Node):
    INPUTS = [Float("value", 0.0)]
    OUTPUTS = [Output("FLOAT")]

    def execute(self, value: float) -> tuple[float]:
        CALLS["FFloat"] += 1
        return (value,)


class FString(Node):
    INPUTS = [String("value", "")]
    OUTPUTS = [Output("STRING")]

    def execute(self, value: str) -> tuple[str]:
        CALLS["FString"] += 1
        return (value,)


class FBool(Node):
    INPUTS = [Boolean("value", False)]
    OUTPUTS = [Output("BOOLEAN")]

    def execute(self, value: bool) -> tuple[bool]:
        return (value,)


class FConcat(Node):
    INPUTS = [String("string_a", ""), String("string_b", ""), String("delimiter", "", optional=True)]
    OUTPUTS = [Output("STRING")]

    def execute(self, string_a: str, string_b: str, delimiter: str = "") -> tuple[str]:
        CALLS["FConcat"] += 1
        return (string_a + delimiter + string_b,)


class FAdd(Node):
    INPUTS = [Int("a", 0), Int("b", 0)]
    OUTPUTS = [Output("INT")]

    def execute(self, a: int, b: int) -> tuple[int]:
        CALLS["FAdd"] += 1
        return (a + b,)


class FOut(Node):
    """An output node showing any value as text."""
    OUTPUT_NODE = True
    INPUTS = [Input("value", "*")]
    OUTPUTS = []

    def execute(self, value: Any) -> dict[str, Any]:
        CALLS["FOut"] += 1
        return {"ui": {"text": [str(value)]}}


class FIntOut(Node):
    """An output node that only takes INT."""
    OUTPUT_NODE = True
    INPUTS = [Input("value", "INT")]
    OUTPUTS = []

    def execute(self, value: int) -> dict[str, Any]:
        CALLS["FIntOut"] += 1
        return {"ui": {"value": [value]}}


class FFail(Node):
    INPUTS = [Input("value", "*"), String("message", "boom")]
    OUTPUTS = [Output("*")]

    def execute(self, value: Any, message: str) -> tuple[Any]:
        CALLS["FFail"] += 1
        raise RuntimeError(message)


class FSwitch(Node):
    """Picks one of two lazy inputs; only the chosen one is evaluated."""
    INPUTS = [Boolean("switch", True), Input("on_true", "*", lazy=True), Input("on_false", "*", lazy=True)]
    OUTPUTS = [Output("*")]

    @staticmethod
    def check_lazy(switch: bool, on_true: Any = None, on_false: Any = None) -> list[str]:
        return ["on_true"] if switch else ["on_false"]

    def execute(self, switch: bool, on_true: Any = None, on_false: Any = None) -> tuple[Any]:
        CALLS["FSwitch"] += 1
        return (on_true if switch else on_false,)


class FRange(Node):
    """Outputs a list 0..count-1 (OUTPUT_IS_LIST)."""
    INPUTS = [Int("count", 3, min=0, max=100)]
    OUTPUTS = [Output("INT", is_list=True)]

    def execute(self, count: int) -> tuple[list[int]]:
        CALLS["FRange"] += 1
        return (list(range(count)),)


class FSum(Node):
    """Takes whole lists (INPUT_IS_LIST)."""
    INPUT_IS_LIST = True
    INPUTS = [Int("values", 0)]
    OUTPUTS = [Output("INT")]

    def execute(self, values: list[int]) -> tuple[int]:
        CALLS["FSum"] += 1
        return (sum(values),)


class FVolatile(Node):
    """IS_CHANGED returns NaN: always reruns."""
    INPUTS = [Int("value", 0)]
    OUTPUTS = [Output("INT")]

    @staticmethod
    def fingerprint(value: int) -> float:
        return float("nan")

    def execute(self, value: int) -> tuple[int]:
        CALLS["FVolatile"] += 1
        return (value,)


class FFingerprint(Node):
    """IS_CHANGED returns the class attribute VERSION, so tests can change it."""
    VERSION = 1
    INPUTS = [Int("value", 0)]
    OUTPUTS = [Output("INT")]

    @classmethod
    def fingerprint(cls, value: int) -> int:
        return cls.VERSION

    def execute(self, value: int) -> tuple[int]:
        CALLS["FFingerprint"] += 1
        return (value,)


class FNotIdempotent(Node):
    NOT_IDEMPOTENT = True
    INPUTS = [Int("value", 0)]
    OUTPUTS = [Output("INT")]

    def execute(self, value: int) -> tuple[int]:
        CALLS["FNotIdempotent"] += 1
        return (value,)


class FChecked(Node):
    """VALIDATE_INPUTS: rejects odd values with a message, raises on 13."""
    INPUTS = [Int("value", 0)]
    OUTPUTS = [Output("INT")]

    @staticmethod
    def validate(value: int) -> bool | str:
        if value == 13:
            raise ValueError("unlucky")
        return True if value % 2 == 0 else f"{value} is odd"

    def execute(self, value: int) -> tuple[int]:
        return (value,)


class FPick(Node):
    """A combo and a ranged float."""
    INPUTS = [Combo("mode", ("a", "b", "c"), "a"), Float("amount", 0.5, min=0.0, max=1.0)]
    OUTPUTS = [Output("STRING")]

    def execute(self, mode: str, amount: float) -> tuple[str]:
        return (f"{mode}:{amount}",)


class FProgress(Node):
    """Reports `steps` progress steps, checking the interrupt flag at each."""
    INPUTS = [Int("steps", 3, min=0, max=100)]
    OUTPUTS = [Output("INT")]

    def execute(self, steps: int) -> tuple[int]:
        ctx = current()
        for i in range(steps):
            ctx.progress(i + 1, steps)
        return (steps,)


class FInterruptMe(Node):
    """Sets the interrupt flag and then checks it, as a user pressing cancel mid-node."""
    INPUTS = [Int("value", 0)]
    OUTPUTS = [Output("INT")]

    def execute(self, value: int) -> tuple[int]:
        ctx = current()
        ctx.interrupt.set()
        ctx.check_interrupted()
        return (value,)


class FHidden(Node):
    OUTPUT_NODE = True
    INPUTS = [Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"), Hidden("unique_id", "UNIQUE_ID")]
    OUTPUTS = []

    def execute(self, prompt: Any, extra_pnginfo: Any, unique_id: str) -> dict[str, Any]:
        return {"ui": {"unique_id": [unique_id], "nodes": [sorted(prompt)], "extra": [extra_pnginfo]}}


class FCounter(Node):
    """Counts its calls on the instance, to show instances are kept per node id."""
    INPUTS = [Int("value", 0)]
    OUTPUTS = [Output("INT")]

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, value: int) -> tuple[int]:
        self.calls += 1
        return (self.calls,)


FAKE_NODES: list[type] = [FInt, FFloat, FString, FBool, FConcat, FAdd, FOut, FIntOut, FFail, FSwitch, FRange, FSum,
                          FVolatile, FFingerprint, FNotIdempotent, FChecked, FPick, FProgress, FInterruptMe, FHidden,
                          FCounter]


def fake_registry(*extra: type | NodeSpec) -> FakeRegistry:
    return FakeRegistry([*FAKE_NODES, *extra])


# ---- SD-shaped specs (same inputs and outputs as ComfyUI's), never executed ------------------

class CheckpointLoaderSimple(Node):
    INPUTS = [Combo("ckpt_name", FileList("checkpoints"))]
    OUTPUTS = [Output("MODEL"), Output("CLIP"), Output("VAE")]


class CLIPTextEncode(Node):
    INPUTS = [String("text", "", multiline=True, dynamicPrompts=True), Input("clip", "CLIP")]
    OUTPUTS = [Output("CONDITIONING")]


class EmptyLatentImage(Node):
    INPUTS = [Int("width", 512, min=16, max=16384, step=8), Int("height", 512, min=16, max=16384, step=8),
              Int("batch_size", 1, min=1, max=4096)]
    OUTPUTS = [Output("LATENT")]


SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "uni_pc")
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")


class KSampler(Node):
    INPUTS = [Input("model", "MODEL"),
              Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
              Int("steps", 20, min=1, max=10000), Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
              Combo("sampler_name", SAMPLERS), Combo("scheduler", SCHEDULERS),
              Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("latent_image", "LATENT"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    OUTPUTS = [Output("LATENT")]


class VAEDecode(Node):
    INPUTS = [Input("samples", "LATENT"), Input("vae", "VAE")]
    OUTPUTS = [Output("IMAGE")]


class SaveImage(Node):
    OUTPUT_NODE = True
    INPUTS = [Input("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    OUTPUTS = []


SD_NODES: list[type] = [CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, SaveImage]
