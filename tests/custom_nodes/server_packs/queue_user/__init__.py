"""A test pack using ComfyUI's server internals: an on-prompt handler that rewrites submitted prompts,
`PromptServer.instance.prompt_queue` and `last_node_id`, and `execution.validate_prompt` from a route."""
from aiohttp import web

import execution
from server import PromptServer

SEEN = []


def rewrite(json_data):
    SEEN.append(json_data.get("client_id"))
    for node in json_data["prompt"].values():
        if node.get("inputs", {}).get("text") == "rewrite-me":
            node["inputs"]["text"] = "rewritten"
    return json_data


def broken_handler(json_data):
    raise ValueError("a broken handler is skipped")


PromptServer.instance.add_on_prompt_handler(broken_handler)
PromptServer.instance.add_on_prompt_handler(rewrite)


@PromptServer.instance.routes.get("/queue_user/state")
async def state(request):
    queue = PromptServer.instance.prompt_queue
    running, pending = queue.get_current_queue()
    prompt_id = request.query.get("prompt_id")
    history = queue.get_history(prompt_id=prompt_id) if prompt_id else {}
    return web.json_response({"running": len(running), "pending": len(pending),
                              "remaining": queue.get_tasks_remaining(), "history": list(history),
                              "seen": SEEN, "last_node_id": PromptServer.instance.last_node_id})


@PromptServer.instance.routes.post("/queue_user/validate")
async def validate(request):
    body = await request.json()
    valid, error, outputs, node_errors = execution.validate_prompt("check", body["prompt"], None)
    return web.json_response({"valid": valid, "error": error, "outputs": outputs, "node_errors": node_errors})


class LastNodeProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "tests"

    def probe(self, text):
        server = PromptServer.instance
        return {"ui": {"text": [text, server.last_node_id, server.last_prompt_id]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"LastNodeProbe": LastNodeProbe}
