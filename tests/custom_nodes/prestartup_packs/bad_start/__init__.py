class StillLoads:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self):
        return (1,)


NODE_CLASS_MAPPINGS = {"StillLoads": StillLoads}
