"""See: previews, channel maps and statistics of any LATENT."""
import json

import numpy as np
import torch

from ..adapters.ui import preview_images
from ..core import channel_maps, preview, render, stats
from ..core.errors import LatentLabInputError
from ..core.formats import LatentFormat
from .common import (CATEGORY, LATENT_INPUT, MODEL_HINT, format_input, in_units, latent_format, node_errors,
                     samples_of, ui_result, units_input)
from .factors import factors_input, rgb_affine, validate_factors_choice


def _optional_format(latent, choice, model, units) -> LatentFormat | None:
    """Raw units and generic channel names need no format, so an ambiguous auto is fine there."""
    try:
        return latent_format(latent, choice, model)
    except LatentLabInputError:
        if units == "raw" and choice == "auto":
            return None
        raise


def _names(fmt, channels: int) -> list:
    return list(fmt.channel_names) if fmt is not None else [f"c{i}" for i in range(channels)]


class LatentRGBPreview:
    DESCRIPTION = ("Linear latent -> RGB preview of every batch item, shown on the node. Fast and approximate: "
                   "a fixed linear map per format (or one fitted to your VAE), not a VAE decode.")
    CATEGORY = f"{CATEGORY}/See"
    FUNCTION = "preview"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("One preview per batch item, [B, H, W, 3] in 0..1.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_INPUT,
                "format": format_input(" Not used with a fitted factor file."),
                "factors": factors_input(),
                "size": (["latent", "x8"], {"default": "x8", "tooltip": "latent: one pixel per latent cell. x8: the decoded image size."}),
                "resample": (list(preview.RESAMPLE_MODES), {"default": "nearest", "tooltip": "How to enlarge to x8: nearest shows cells, bilinear smooths."}),
            },
            "optional": {"model": MODEL_HINT},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, factors):
        return validate_factors_choice(factors)

    @node_errors("Latent RGB Preview")
    def preview(self, latent, format, factors, size, resample, model=None):
        samples = samples_of(latent)
        affine = rgb_affine(latent, factors, format, model)
        images = preview.preview_images(samples, affine, 8 if size == "x8" else 1, resample)
        return ui_result((images,), images=preview_images(images, "latentlab_preview"))


class LatentChannelMaps:
    DESCRIPTION = ("One tile per latent channel with a diverging colormap (blue negative, red positive, symmetric "
                   "range), labeled with channel name, mean, std, min and max; one grid per batch item.")
    CATEGORY = f"{CATEGORY}/See"
    FUNCTION = "maps"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("maps",)
    OUTPUT_TOOLTIPS = ("One grid of channel tiles per batch item.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_INPUT,
                "format": format_input(" With units raw and an ambiguous format, channels are named c0, c1..."),
                "units": units_input(),
                "scale": (list(channel_maps.SCALE_MODES), {"default": "shared", "tooltip": "shared: one color range for all channels and items, so tiles compare. per_channel: each tile uses its own max|x|."}),
                "tile_scale": ("INT", {"default": 4, "min": 1, "max": 16, "tooltip": "Screen pixels per latent cell in each tile."}),
            },
            "optional": {"model": MODEL_HINT},
        }

    @node_errors("Latent Channel Maps")
    def maps(self, latent, format, units, scale, tile_scale, model=None):
        samples = samples_of(latent)
        fmt = _optional_format(latent, format, model, units)
        values = in_units(samples, units, fmt)
        images = channel_maps.channel_maps(values, _names(fmt, samples.shape[1]), scale, tile_scale)
        return ui_result((images,), images=preview_images(images, "latentlab_maps"))


def stats_report(samples, fmt, units, sigma_k, affine) -> dict:
    values = in_units(samples, units, fmt).float()
    names = _names(fmt, samples.shape[1])
    casts = preview.mean_color(samples, affine).clamp(0, 1) if affine is not None else None
    items = []
    for index, item in enumerate(stats.per_item_stats(values, sigma_k)):
        entry = {"index": index, "channels": _by_channel(item, names)}
        if casts is not None:
            entry["color_cast"] = _color(casts[index])
        items.append(entry)
    report = {
        "format": fmt.key if fmt is not None else None,
        "units": units,
        "shape": list(samples.shape),
        "sigma_k": sigma_k,
        "channel_names": names,
        "batch": _by_channel(stats.batch_stats(values, sigma_k), names),
        "items": items,
    }
    if casts is not None:
        report["color_cast"] = _color(casts.mean(0))
    return report


def _by_channel(table: dict, names: list) -> list:
    rows = []
    for c, name in enumerate(names):
        row = {"name": name}
        for key, value in table.items():
            row[key] = {p: v[c] for p, v in value.items()} if isinstance(value, dict) else value[c]
        rows.append(row)
    return rows


def _color(rgb: torch.Tensor) -> dict:
    values = [round(float(v), 4) for v in rgb]
    return {"rgb": values, "hex": "#" + "".join(f"{round(v * 255):02x}" for v in values)}


def stats_text(report: dict) -> str:
    lines = [f"{report['format'] or 'unknown format'} · {report['units']} units · shape {report['shape']}"]
    for row in report["batch"]:
        lines.append(f"{row['name']:>12}: mean {row['mean']:+.3f} std {row['std']:.3f} "
                     f"min {row['min']:+.3f} max {row['max']:+.3f} >{report['sigma_k']:g}σ {100 * row['beyond_k_sigma']:.2f}%")
    if "color_cast" in report:
        cast = report["color_cast"]
        lines.append(f"color cast (mean preview color): {cast['hex']} rgb {cast['rgb']}")
    return "\n".join(lines)


def stats_histogram(samples, fmt, units, names, bins: int = 96) -> torch.Tensor:
    values = in_units(samples, units, fmt).float().transpose(0, 1).flatten(1).numpy()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.stack([np.histogram(row, edges)[0] for row in values]).astype(np.float64)
    title = f"value histogram per channel ({units} units)"
    return render.from_pil(render.histogram(counts, edges, names, title))[None]


class LatentStats:
    DESCRIPTION = ("Per-channel mean, std, min, max, percentiles and share of values beyond k·σ, per batch item "
                   "and over the batch, plus the color cast (mean color of the linear preview). Shown on the node, "
                   "returned as JSON and as a histogram image.")
    CATEGORY = f"{CATEGORY}/See"
    FUNCTION = "stats"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("json", "histogram")
    OUTPUT_TOOLTIPS = ("The statistics as JSON (keys: format, units, shape, sigma_k, channel_names, batch, items, color_cast).",
                       "Histogram of values per channel over the batch.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_INPUT,
                "format": format_input(" Needed for scaled units and for the color cast."),
                "units": units_input(),
                "sigma_k": ("FLOAT", {"default": 3.0, "min": 0.5, "max": 10.0, "step": 0.5, "tooltip": "Report the share of values farther than k standard deviations from the channel mean."}),
                "factors": factors_input(),
            },
            "optional": {"model": MODEL_HINT},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, factors):
        return validate_factors_choice(factors)

    @node_errors("Latent Stats")
    def stats(self, latent, format, units, sigma_k, factors, model=None):
        samples = samples_of(latent)
        fmt = _optional_format(latent, format, model, units)
        affine = rgb_affine(latent, factors, format, model) if fmt is not None or factors not in ("comfyui", "blog") else None
        report = stats_report(samples, fmt, units, sigma_k, affine)
        histogram = stats_histogram(samples, fmt, units, report["channel_names"])
        text = stats_text(report)
        return ui_result((json.dumps(report), histogram), text=text,
                         images=preview_images(histogram, "latentlab_hist"))


NODES = {
    "LatentLabRGBPreview": (LatentRGBPreview, "Latent RGB Preview"),
    "LatentLabChannelMaps": (LatentChannelMaps, "Latent Channel Maps"),
    "LatentLabStats": (LatentStats, "Latent Stats"),
}
