"""Test pack in ComfyUI's schema API (comfy_api.latest), with an async entrypoint."""
from comfy_api.latest import ComfyExtension, io, ui

SEEN = {"fingerprint": 0}


class SchemaAdd(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SchemaAdd", display_name="Schema Add", category="tests/schema",
            description="Adds two integers.",
            inputs=[io.Int.Input("a", default=1, min=-100, max=100, tooltip="first"),
                    io.Int.Input("b", default=2, min=-100, max=100, optional=True)],
            outputs=[io.Int.Output(display_name="sum"), io.String.Output(display_name="text")])

    @classmethod
    def fingerprint_inputs(cls, a, b=2):
        SEEN["fingerprint"] += 1
        return (a, b)

    @classmethod
    def validate_inputs(cls, a, b=2):
        return True if a != 13 else "13 is unlucky"

    @classmethod
    def execute(cls, a, b=2):
        return io.NodeOutput(a + b, f"{a}+{b}")


class SchemaChoose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SchemaChoose", category="tests/schema",
            inputs=[io.Combo.Input("which", options=["left", "right"], default="left"),
                    io.Custom("THING").Input("left", lazy=True), io.Custom("THING").Input("right", lazy=True)],
            outputs=[io.Custom("THING").Output()])

    @classmethod
    def check_lazy_status(cls, which, left=None, right=None):
        return [which] if (left if which == "left" else right) is None else []

    @classmethod
    async def execute(cls, which, left=None, right=None):
        return io.NodeOutput(left if which == "left" else right)


class SchemaShow(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SchemaShow", category="tests/schema", is_output_node=True,
            inputs=[io.String.Input("text", force_input=True), io.Image.Input("image", optional=True),
                    io.Custom("THING").Input("thing", optional=True)],
            outputs=[], hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, text, image=None, thing=None):
        label = f" [{thing['label']}]" if thing is not None else ""
        shown = f"{text}{label} from {cls.hidden.unique_id} ({'with' if cls.hidden.prompt else 'no'} prompt)"
        if image is not None:
            saved = ui.PreviewImage(image, cls=cls).as_dict()
            return io.NodeOutput(ui={"text": [shown], "images": saved["images"]})
        return io.NodeOutput(ui=ui.PreviewText(shown))


class SchemaThing(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SchemaThing", category="tests/schema",
                         inputs=[io.String.Input("label", default="thing")],
                         outputs=[io.Custom("THING").Output(), io.String.Output(is_output_list=True)])

    @classmethod
    def execute(cls, label):
        return io.NodeOutput({"label": label}, [label, label.upper()])


class SchemaExtension(ComfyExtension):
    async def get_node_list(self):
        return [SchemaAdd, SchemaChoose, SchemaShow, SchemaThing]


async def comfy_entrypoint():
    return SchemaExtension()
