"""A pack that reads what its prestartup script left."""
import builtins

MARKER = list(getattr(builtins, "loom_test_prestartup_marker", ["missing"]))


class PrestartupMarker:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self):
        return (MARKER[0],)


NODE_CLASS_MAPPINGS = {"PrestartupMarker": PrestartupMarker}
