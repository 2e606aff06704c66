"""What every Latent Lab node shares: error wording, standard inputs, LATENT handling."""
import functools
import json
import math

import torch

from ..adapters.comfy_formats import format_catalog, model_format
from ..core.errors import LatentLabInputError, require
from ..core.formats import LATENT_FORMAT_KEY, LatentFormat, resolve_format
from ..core.validate import check_latent

CATEGORY = "Latent Lab"


class LatentLabError(LatentLabInputError):
    """A LatentLabInputError that names the node it came from."""


def node_errors(display_name: str):
    """Prefix core errors with the node's name; keeps the wrapped signature for ComfyUI and tests."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except LatentLabError:
                raise
            except LatentLabInputError as error:
                raise LatentLabError(f"Latent Lab · {display_name}: {error.problem}", error.fix) from error
        return wrapper
    return decorate


def format_choices() -> list:
    """auto, the built-in keys (sd15, sdxl, sd3, flux), then every ComfyUI format class with RGB factors."""
    return ["auto"] + list(format_catalog())


def format_input(tooltip_extra: str = "") -> tuple:
    return (format_choices(), {
        "default": "auto",
        "tooltip": "Latent format (sets units and RGB factors). auto: from the connected MODEL, from a Latent Lab "
                   "tag on the LATENT, or from the channel count when only one format of the latent's shape "
                   "(image or video) has it. 4-channel latents are SD1.x or SDXL, 16-channel videos Wan or "
                   "HunyuanVideo: pick one or connect the MODEL. Names in capitals are ComfyUI's format classes "
                   "(Wan21, HunyuanVideo, Flux...)." + tooltip_extra,
    })


def units_input() -> tuple:
    return (["scaled", "raw"], {
        "default": "scaled",
        "tooltip": "scaled: the units samplers and the SDXL-latent blog use ((raw - shift) x scale; SDXL ends near ±4). "
                   "raw: the VAE's values as stored in a LATENT. scaled needs a known format.",
    })


MODEL_HINT = ("MODEL", {"tooltip": "Optional: the model that made this latent; its latent format is used when format is auto."})
LATENT_INPUT = ("LATENT", {"tooltip": "The latent to inspect (every batch item is used)."})


def samples_of(latent, finite: bool = True, video: bool = False) -> torch.Tensor:
    """video: [B, C, T, H, W] latents are accepted besides [B, C, H, W]."""
    require(isinstance(latent, dict) and "samples" in latent,
            "The LATENT input is not a ComfyUI latent (a dict with 'samples').", "Connect a LATENT output.")
    return check_latent(latent["samples"], finite, video)


def latent_format(latent: dict, choice: str, model=None) -> LatentFormat:
    samples = latent["samples"]
    hint = model_format(model) or latent.get(LATENT_FORMAT_KEY)
    return resolve_format(choice, samples.shape[1], hint, format_catalog(), samples.ndim)


def optional_latent_format(latent: dict, choice: str, model, needed: bool) -> LatentFormat | None:
    """latent_format; or None where the node can do without a format (`needed` false) and none is found."""
    try:
        return latent_format(latent, choice, model)
    except LatentLabInputError:
        if needed:
            raise
        return None


def in_units(samples: torch.Tensor, units: str, fmt: LatentFormat | None) -> torch.Tensor:
    if units == "raw":
        return samples
    return fmt.to_scaled(samples)


def json_text(value) -> str:
    """Plain JSON, which has no NaN or Infinity: NaN (a figure that could not be measured) becomes null, and an
    infinity (an exact match's PSNR) the string "inf" or "-inf"."""
    def plain(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None if math.isnan(item) else str(item)
        if isinstance(item, dict):
            return {k: plain(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [plain(v) for v in item]
        return item
    return json.dumps(plain(value), allow_nan=False)


def with_samples(latent: dict, samples: torch.Tensor, fmt: LatentFormat | None = None, **tags) -> dict:
    """A new LATENT dict: the input's other keys kept, samples replaced, never mutated in place."""
    out = {k: v for k, v in latent.items() if k != "samples"}
    out["samples"] = samples
    if fmt is not None:
        out[LATENT_FORMAT_KEY] = fmt.key
    out.update(tags)
    return out


def ui_result(result: tuple, text: str | None = None, images: list | None = None) -> dict:
    ui = {}
    if text is not None:
        ui["text"] = [text]
    if images:
        ui["images"] = images
    return {"ui": ui, "result": result}
