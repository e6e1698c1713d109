"""A route added the ComfyUI way, through PromptServer.instance.routes."""
from aiohttp import web
from server import PromptServer


@PromptServer.instance.routes.get("/classic_pack/hello")
async def hello(request):
    return web.json_response({"hello": "classic_pack"})
