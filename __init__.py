"""Latent Lab: see, correct, bridge, probe and sweep Stable Diffusion latents in ComfyUI."""
from .adapters.folders import register as _register_folders
from .adapters.routes import register_routes as _register_routes
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

_register_folders()
_register_routes()  # the Latent Explorer under /latentlab/; does nothing outside ComfyUI's server

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
