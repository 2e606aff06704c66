"""The Latent Explorer's web routes on ComfyUI's server, under /latentlab/ (read-only).

    GET /latentlab/                         the Explorer page (web/index.html)
    GET /latentlab/<file>                   its scripts and styles (web/)
    GET /latentlab/api/latents              JSON list of .latent files in ComfyUI's output and input folders
    GET /latentlab/api/latent?type=&subfolder=&filename=    one file's bytes
Refusals answer JSON {"error", "fix", "status"}. Which files may be read is decided by core/latent_files.py.
"""
import asyncio
import os

from ..core import latent_files
from .runtime import comfy

PREFIX = "/latentlab"
WEB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
_registered = []


def roots() -> dict:
    fp = comfy("folder_paths")
    if fp is None:
        return {}
    return {"output": fp.get_output_directory(), "input": fp.get_input_directory()}


def _read_capped(path: str) -> bytes:
    """The file's bytes, one past the cap at most (so a file that grew since it was checked shows)."""
    with open(path, "rb") as handle:
        return handle.read(latent_files.MAX_BYTES + 1)


def register_routes() -> bool:
    """Add the routes to PromptServer.instance.routes once; False (and nothing done) outside ComfyUI."""
    server_module = comfy("server")
    instance = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    if instance is None or _registered:
        return bool(_registered)
    from aiohttp import web

    routes = instance.routes

    def error_response(error: latent_files.LatentFileError):
        return web.json_response(error.as_json(), status=error.status)

    @routes.get(PREFIX)
    async def explorer_redirect(request):
        raise web.HTTPFound(PREFIX + "/" + (f"?{request.query_string}" if request.query_string else ""))

    @routes.get(PREFIX + "/")
    async def explorer_page(request):
        return web.FileResponse(os.path.join(WEB_DIR, "index.html"), headers={"Cache-Control": "no-cache"})

    @routes.get(PREFIX + "/api/latents")
    async def list_latents(request):
        files = await asyncio.to_thread(latent_files.list_files, roots())  # disk walks off the event loop
        return web.json_response({"files": files, "max_bytes": latent_files.MAX_BYTES,
                                  "roots": list(latent_files.ROOT_TYPES)},
                                 headers={"Cache-Control": "no-store"})

    @routes.get(PREFIX + "/api/latent")
    async def read_latent(request):
        query = request.query
        try:
            path = latent_files.resolve(roots(), query.get("type", "output"), query.get("filename", ""),
                                        query.get("subfolder", ""))
        except latent_files.LatentFileError as error:
            return error_response(error)
        body = await asyncio.to_thread(_read_capped, path)
        if len(body) > latent_files.MAX_BYTES:  # grew since it was checked
            return error_response(latent_files.LatentFileError(413, "The file grew past the size cap while read."))
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={"Cache-Control": "no-store"})

    @routes.get(PREFIX + "/api/{rest:.*}")
    async def unknown_api(request):
        return error_response(latent_files.LatentFileError(
            404, f"Unknown Latent Explorer API path '{request.path}'.", "Use /latentlab/api/latents or /latentlab/api/latent."))

    # Static last: a prefix resource claims every path under it.
    routes.static(PREFIX, WEB_DIR, follow_symlinks=False)
    _registered.append(instance)
    return True
