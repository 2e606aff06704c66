"""Choosing RGB factors: a built-in set of the latent's format, or a fitted file."""

from ..adapters import folders
from ..core.factor_files import inspect_factors, load_factors
from ..core.formats import RgbAffine
from ..core.errors import require
from .common import latent_format

BUILTIN = ("comfyui", "blog")
FIT_HINT = ("Make it with the Fit Latent RGB Factors node (VAE + a few images), "
            "which saves it in models/latent_rgb/.")


def factor_choices() -> list:
    return list(BUILTIN) + folders.list_files("latent_rgb")


def factors_input() -> tuple:
    return (factor_choices(), {
        "default": "comfyui",
        "tooltip": "RGB factors. comfyui: ComfyUI's built-in linear preview factors for the format. "
                   "blog: the SDXL-latent blog's weights (SDXL only, more contrast). "
                   "A .safetensors name: factors fitted to your VAE (models/latent_rgb/).",
    })


def validate_factors_choice(factors: str):
    """VALIDATE_INPUTS body: True, or a message that says how to make or get a missing file."""
    if factors in BUILTIN:
        return True
    try:
        # the header only: input checks run on ComfyUI's event loop
        inspect_factors(folders.resolve("latent_rgb", factors, FIT_HINT))
    except ValueError as error:
        return str(error)
    return True


def _affine(path: str) -> RgbAffine:
    return load_factors(path)[0]


def rgb_affine(latent: dict, factors: str, format_choice: str, model=None) -> RgbAffine:
    if factors in BUILTIN:
        fmt = latent_format(latent, format_choice, model)
        require(fmt.factor_sets, f"The {fmt.label} format has no linear RGB factors in ComfyUI.",
                "Choose a fitted factor file in factors. " + FIT_HINT)
        require(factors in fmt.factor_sets,
                f"The '{factors}' factors exist for SDXL only; this latent is {fmt.label}.",
                "Use factors 'comfyui', or a fitted file.")
        return fmt.rgb_affine(factors)
    return folders.load_named("latent_rgb", factors, FIT_HINT, _affine)
