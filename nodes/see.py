"""See: previews, channel maps and statistics of any LATENT."""
from ..adapters.ui import preview_images
from ..core import channel_maps, preview, stats
from ..core.formats import LatentFormat
from .common import (CATEGORY, LATENT_INPUT, MODEL_HINT, format_input, in_units, json_text, node_errors,
                     optional_latent_format, samples_of, ui_result, units_input)
from .factors import factors_input, rgb_affine, validate_factors_choice


def _optional_format(latent, choice, model, units) -> LatentFormat | None:
    """Raw units and generic channel names need no format, so an ambiguous auto is fine there."""
    return optional_latent_format(latent, choice, model, needed=not (units == "raw" and choice == "auto"))


def _names(fmt, channels: int) -> list:
    return list(fmt.channel_names) if fmt is not None else [f"c{i}" for i in range(channels)]


def frame_input(what: str) -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": 4096,
                    "tooltip": f"Video latents [B, C, T, H, W] only: the frame (0-based latent frame) {what}. "
                               "Image latents ignore it."})


def frame_stride_input() -> tuple:
    return ("INT", {"default": 1, "min": 1, "max": 1024,
                    "tooltip": "Video latents only: preview every n-th latent frame (1: every frame)."})


def frame_limit_input() -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": 4096,
                    "tooltip": "Video latents only: at most this many frames per item (0: no limit). Stride and "
                               "limit keep a long clip's preview affordable (a 121-frame Wan clip has 31 latent frames)."})


class LatentRGBPreview:
    DESCRIPTION = ("Linear latent -> RGB preview of every batch item, shown on the node. Fast and approximate: "
                   "a fixed linear map per format (or one fitted to your VAE), not a VAE decode. A video latent "
                   "gives every frame of every item, item after item (ComfyUI's IMAGE batch of video frames).")
    CATEGORY = f"{CATEGORY}/See"
    FUNCTION = "preview"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("One preview per batch item, [B, H, W, 3] in 0..1; for a video latent one per frame kept, "
                       "[B x frames, H, W, 3], all frames of item 0 first.",)
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
            "optional": {"model": MODEL_HINT, "frame_stride": frame_stride_input(), "frame_limit": frame_limit_input()},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, factors):
        return validate_factors_choice(factors)

    @node_errors("Latent RGB Preview")
    def preview(self, latent, format, factors, size, resample, model=None, frame_stride=1, frame_limit=0):
        samples = samples_of(latent, video=True)
        affine = rgb_affine(latent, factors, format, model)
        images = preview.preview_images(samples, affine, 8 if size == "x8" else 1, resample, frame_stride, frame_limit)
        return ui_result((images,), images=preview_images(images, "latentlab_preview"))


class LatentChannelMaps:
    DESCRIPTION = ("One tile per latent channel with a diverging colormap (blue negative, red positive, symmetric "
                   "range), labeled with channel name, mean, std, min and max; one grid per batch item. For a video "
                   "latent the tiles show the chosen frame; ranges and figures cover all frames of the item.")
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
            "optional": {"model": MODEL_HINT, "frame": frame_input("the tiles show")},
        }

    @node_errors("Latent Channel Maps")
    def maps(self, latent, format, units, scale, tile_scale, model=None, frame=0):
        samples = samples_of(latent, video=True)
        fmt = _optional_format(latent, format, model, units)
        values = in_units(samples.double(), units, fmt)  # float64: scaled values of huge raw ones stay finite
        images = channel_maps.channel_maps(values, _names(fmt, samples.shape[1]), scale, tile_scale, frame)
        return ui_result((images,), images=preview_images(images, "latentlab_maps"))


class LatentStats:
    DESCRIPTION = ("Per-channel mean, std, min, max, percentiles and share of values beyond k·σ, per batch item "
                   "and over the batch, plus the color cast (mean color of the linear preview). Shown on the node, "
                   "returned as JSON and as a histogram image. A video latent is measured over all its frames, "
                   "and the chosen frame on its own.")
    CATEGORY = f"{CATEGORY}/See"
    FUNCTION = "stats"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("json", "histogram")
    OUTPUT_TOOLTIPS = ("The statistics as JSON (keys: format, units, shape, sigma_k, channel_names, batch, items, "
                       "color_cast; for a video also frame: the chosen frame's index, batch and items).",
                       "Histogram of values per channel over the batch.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_INPUT,
                "format": format_input(" Needed for scaled units and for the color cast."),
                "units": units_input(),
                "sigma_k": ("FLOAT", {"default": 3.0, "min": stats.SIGMA_K_RANGE[0], "max": stats.SIGMA_K_RANGE[1], "step": 0.5, "tooltip": "Report the share of values farther than k standard deviations from the channel mean."}),
                "factors": factors_input(),
            },
            "optional": {"model": MODEL_HINT, "frame": frame_input("reported on its own besides the whole clip")},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, factors):
        return validate_factors_choice(factors)

    @node_errors("Latent Stats")
    def stats(self, latent, format, units, sigma_k, factors, model=None, frame=0):
        samples = samples_of(latent, video=True)
        fmt = _optional_format(latent, format, model, units)
        builtin = factors in ("comfyui", "blog")
        # no color cast without factors: a format ComfyUI gives none, or an ambiguous one in raw units
        affine = rgb_affine(latent, factors, format, model) if not builtin or (fmt is not None and fmt.factor_sets) \
            else None
        values = in_units(samples.double(), units, fmt)  # float64: scaled values of huge raw ones stay finite
        colors = preview.mean_color(samples, affine) if affine is not None else None
        report = stats.stats_report(values, _names(fmt, samples.shape[1]), sigma_k, colors,
                                    fmt.key if fmt is not None else None, units, frame)
        histogram = stats.stats_histogram(values, report["channel_names"], units)
        return ui_result((json_text(report), histogram), text=stats.stats_text(report),
                         images=preview_images(histogram, "latentlab_hist"))


NODES = {
    "LatentLabRGBPreview": (LatentRGBPreview, "Latent RGB Preview"),
    "LatentLabChannelMaps": (LatentChannelMaps, "Latent Channel Maps"),
    "LatentLabStats": (LatentStats, "Latent Stats"),
}
