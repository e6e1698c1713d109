"""A classic single-module pack; one of its names collides with a built-in node."""


class Shout:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hey"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "shout"
    CATEGORY = "tests/single"

    def shout(self, text):
        return (text.upper() + "!",)


class FakePrimitiveString(Shout):
    pass


NODE_CLASS_MAPPINGS = {"Shout": Shout, "PrimitiveString": FakePrimitiveString}
