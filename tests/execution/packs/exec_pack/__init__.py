"""A test pack for ComfyUI's execution model, written against ComfyUI's module names exactly as
third-party packs import them (`comfy_execution.*`, `comfy.comfy_types`, `comfy.utils`,
`comfy_api.latest`). Values are plain numbers so the tests are fast; `ExecRecord` is the output
node and shows what it received in its ui (`{"values": [...]}`)."""
from __future__ import annotations

import asyncio
import time

from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict
from comfy.comfy_types.node_typing import InputTypeOptions  # noqa: F401 - the import path packs use
from comfy.utils import ProgressBar
from comfy_api.latest import ComfyAPISync, io
from comfy_execution.graph import DynamicPrompt, ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder, is_link
from comfy_execution.graph_utils import ExecutionBlocker as BlockerFromUtils

assert BlockerFromUtils is ExecutionBlocker
CALLS: dict[str, int] = {}  # class name -> times its function ran (read by the tests)


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


class ExecInt(ComfyNodeABC):
    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        _count("ExecInt")
        return (value,)


class ExecMath:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": (IO.ANY, {}), "b": (IO.ANY, {}),
                             "op": (["add", "sub", "mul", "eq", "lt"], {"default": "add"})}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    def run(self, a, b, op):
        _count("ExecMath")
        return ({"add": a + b, "sub": a - b, "mul": a * b, "eq": a == b, "lt": a < b}[op],)


class ExecMakeList:
    """`value1` is in both required and optional, as ComfyUI's own list test node declares it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value1": (IO.ANY,)}, "optional": {f"value{i}": (IO.ANY,) for i in range(1, 6)}}
    RETURN_TYPES = (IO.ANY,)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, **kwargs):
        return ([kwargs[f"value{i}"] for i in range(1, 6) if f"value{i}" in kwargs],)


class ExecBlock:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,), "block": ("BOOLEAN", {"forceInput": True}),
                             "message": ("STRING", {"default": ""})}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    def run(self, value, block, message):
        if block:
            return (ExecutionBlocker(message or None),)
        return (value,)


class ExecRecord:
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,)}}
    RETURN_TYPES = ()
    FUNCTION = "run"

    def run(self, value):
        _count("ExecRecord")
        return {"ui": {"values": [value]}}


class ExecVariadicSum:
    """Reads inputs it never declared from **kwargs (linked `input2`, `input3`, ...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("INT", {"forceInput": True})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, input1, **kwargs):
        return (input1 + sum(kwargs.values()),)


class ExecWhileOpen:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,)}}
    RETURN_TYPES = ("FLOW_CONTROL", IO.ANY)
    FUNCTION = "run"

    def run(self, value):
        return ("flow", value)


class ExecWhileClose:
    """Loops by re-expanding itself: the nodes between the open node and this one are copied
    (this node included, as "Recurse") with the open node fed the current value."""  # noqa: D205

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"flow_control": ("FLOW_CONTROL", {"rawLink": True}), "value": (IO.ANY,),
                             "condition": ("BOOLEAN", {"forceInput": True})},
                "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    def run(self, flow_control, value, condition, dynprompt: DynamicPrompt, unique_id):
        if not condition:
            return (value,)
        open_id = flow_control[0]
        upstream: dict[str, list[str]] = {}
        stack = [unique_id]
        while stack:
            node_id = stack.pop()
            for v in dynprompt.get_node(node_id)["inputs"].values():
                if is_link(v) and v[0] not in upstream:
                    upstream[v[0]] = []
                    if v[0] != open_id:
                        stack.append(v[0])
                if is_link(v):
                    upstream[v[0]].append(node_id)
        contained = {open_id, unique_id}
        stack = [open_id]
        while stack:
            for child in upstream.get(stack.pop(), []):
                if child not in contained:
                    contained.add(child)
                    stack.append(child)
        graph = GraphBuilder()
        # Clones are named after the submitted node they copy, so ids grow by one prefix per
        # iteration (naming them after the previous clone would grow them quadratically).
        def name(node_id: str) -> str:
            return "Recurse" if node_id == unique_id else dynprompt.get_display_node_id(node_id)
        for node_id in contained:
            graph.node(dynprompt.get_node(node_id)["class_type"], name(node_id)).set_override_display_id(node_id)
        for node_id in contained:
            clone = graph.lookup_node(name(node_id))
            for k, v in dynprompt.get_node(node_id)["inputs"].items():
                clone.set_input(k, graph.lookup_node(name(v[0])).out(v[1]) if is_link(v) and v[0] in contained else v)
        graph.lookup_node(name(open_id)).set_input("value", value)
        return {"result": (graph.lookup_node("Recurse").out(0),), "expand": graph.finalize()}


class ExecSleep(ComfyNodeABC):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY, {}), "seconds": ("FLOAT", {"default": 0.1, "min": 0, "max": 60})},
                "hidden": {"unique_id": "UNIQUE_ID"}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    async def run(self, value, seconds, unique_id):
        bar = ProgressBar(seconds, node_id=unique_id)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            bar.update_absolute(elapsed)
            await asyncio.sleep(min(0.02, seconds))
        return (value,)


class ExecParallelSleep:
    """Expands into three sleeps and a sum; they run at the same time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 0.5, "min": 0, "max": 60})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, seconds):
        graph = GraphBuilder()
        sleeps = [graph.node("ExecSleep", value=i, seconds=seconds) for i in (1, 2, 3)]
        total = graph.node("ExecVariadicSum", input1=sleeps[0].out(0), input2=sleeps[1].out(0),
                           input3=sleeps[2].out(0))
        return {"result": (total.out(0),), "expand": graph.finalize()}


class ExecFail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,), "seconds": ("FLOAT", {"default": 0.0, "min": 0, "max": 60})}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    async def run(self, value, seconds):
        await asyncio.sleep(seconds)
        raise RuntimeError(f"async failure for {value}")


class ExecAsyncLazySwitch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pick_first": ("BOOLEAN", {"default": True}),
                             "first": (IO.ANY, {"lazy": True}), "second": (IO.ANY, {"lazy": True})}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    async def check_lazy_status(self, pick_first, first=None, second=None):
        await asyncio.sleep(0)
        return ["first"] if pick_first else ["second"]

    def run(self, pick_first, first=None, second=None):
        return (first if pick_first else second,)


class ExecAsyncValidated:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1}), "linked": (IO.ANY,)}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    async def VALIDATE_INPUTS(cls, value, linked):
        await asyncio.sleep(0)
        if linked is not None:
            return "a linked input must reach VALIDATE_INPUTS as None"
        return True if value != 13 else "13 is refused"

    def run(self, value, linked):
        return (value,)


class ExecIsChangedLinked:
    """IS_CHANGED names a linked input: it gets None there (and the constant as given)."""

    SEEN: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"linked": (IO.ANY,), "salt": ("INT", {"default": 0})}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, linked, salt):
        cls.SEEN.append(linked)
        return salt

    def run(self, linked, salt):
        _count("ExecIsChangedLinked")
        return (linked,)


class ExecWhoAmI:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": {"unique_id": "UNIQUE_ID"}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, unique_id):
        return (unique_id,)


class ExecDynamicCycle:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,)}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    def run(self, value):
        graph = GraphBuilder()
        a = graph.node("ExecMath", a=value, b=1, op="add")
        b = graph.node("ExecMath", a=a.out(0), b=1, op="add")
        a.set_input("b", b.out(0))
        return {"result": (b.out(0),), "expand": graph.finalize()}


class ExecApiProgress:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,)}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    def run(self, value):
        api = ComfyAPISync()
        for step in range(1, 4):
            api.execution.set_progress(step, 3)
        return (value,)


class SchemaExpandDouble(io.ComfyNode):
    """A schema-API node returning an expansion through io.NodeOutput(expand=...)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SchemaExpandDouble", inputs=[io.Int.Input("value")], outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, value):
        graph = GraphBuilder()
        doubled = graph.node("ExecMath", a=value, b=value, op="add")
        return io.NodeOutput(doubled.out(0), expand=graph.finalize())


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    ExecInt, ExecMath, ExecMakeList, ExecBlock, ExecRecord, ExecVariadicSum, ExecWhileOpen, ExecWhileClose,
    ExecSleep, ExecParallelSleep, ExecFail, ExecAsyncLazySwitch, ExecAsyncValidated, ExecIsChangedLinked,
    ExecWhoAmI, ExecDynamicCycle, ExecApiProgress, SchemaExpandDouble)}


class SlowPreview:
    """Reports one step with a preview image (a solid 8×8 JPEG)."""

    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ()
    FUNCTION = "run"

    def run(self):
        from PIL import Image
        ProgressBar(1).update_absolute(1, 1, ("JPEG", Image.new("RGB", (8, 8), (200, 10, 10)), 512))
        return {"ui": {"values": [1]}}


class BusyNode:
    """Spins in Python (holding the GIL between bytecodes) for `seconds`."""

    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 1.0, "min": 0, "max": 60})}}
    RETURN_TYPES = ()
    FUNCTION = "run"

    def run(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sum(range(1000))
        return {"ui": {"values": [seconds]}}


NODE_CLASS_MAPPINGS.update({"SlowPreview": SlowPreview, "BusyNode": BusyNode})


class SchemaSumGrow(io.ComfyNode):
    """io.Autogrow: sums however many `values.v<i>` sockets are connected (at least one)."""

    @classmethod
    def define_schema(cls):
        template = io.Autogrow.TemplatePrefix(io.Int.Input("v"), prefix="v", min=1, max=5)
        return io.Schema(node_id="SchemaSumGrow", inputs=[io.Autogrow.Input("values", template=template)],
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, values):
        return io.NodeOutput(sum(values.values()))


class SchemaPickMode(io.ComfyNode):
    """io.DynamicCombo: "scale" brings a `factor`, "offset" an `amount`; io.MultiType input."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SchemaPickMode", inputs=[
            io.MultiType.Input("value", types=[io.Int, io.Float]),
            io.DynamicCombo.Input("mode", options=[
                io.DynamicCombo.Option("scale", [io.Int.Input("factor", default=2)]),
                io.DynamicCombo.Option("offset", [io.Int.Input("amount", default=1)])])],
            outputs=[io.AnyType.Output()])

    @classmethod
    def execute(cls, value, mode):
        if mode["mode"] == "scale":
            return io.NodeOutput(value * mode["factor"])
        return io.NodeOutput(value + mode["amount"] + 1000 * ("factor" in mode))


class SchemaDouble(io.ComfyNode):
    """io.MatchType: the output is of whatever type reaches `value` (numbers, as the template allows)."""

    @classmethod
    def define_schema(cls):
        numbers = io.MatchType.Template("number", allowed_types=[io.Int, io.Float])
        return io.Schema(node_id="SchemaDouble", inputs=[io.MatchType.Input("value", template=numbers)],
                         outputs=[io.MatchType.Output(numbers), io.String.Output(display_name="text")])

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(value * 2, repr(value * 2))


NODE_CLASS_MAPPINGS.update({"SchemaSumGrow": SchemaSumGrow, "SchemaPickMode": SchemaPickMode,
                            "SchemaDouble": SchemaDouble})


class ExecExpandRecord:
    """Expands into an output node (recording the value) and passes the value on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY,)}}
    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "run"

    def run(self, value):
        graph = GraphBuilder()
        graph.node("ExecRecord", "inner", value=value)
        return {"result": (value,), "expand": graph.finalize()}


NODE_CLASS_MAPPINGS["ExecExpandRecord"] = ExecExpandRecord


class SchemaTakeAll(io.ComfyNode):
    """Schema(accept_all_inputs=True): undeclared constants reach execute as keywords."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SchemaTakeAll", inputs=[io.Int.Input("base")], outputs=[io.String.Output()],
                         accept_all_inputs=True)

    @classmethod
    def execute(cls, base, **extra):
        return io.NodeOutput(f"{base}:" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())))


NODE_CLASS_MAPPINGS["SchemaTakeAll"] = SchemaTakeAll
