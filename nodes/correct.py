"""Correct: center, soft-clamp, maximize and color-balance latents, on LATENTs and during sampling."""

from ..adapters.comfy_formats import format_catalog, model_format
from ..adapters.comfy_objects import model_latent_channels
from ..adapters.correction_patch import TIMELINES, correction_model, trajectory_model
from ..adapters.ui import preview_images
from ..core import correct_ops as ops
from ..core import correct_schedule as schedules
from ..core.channels import chosen_channels, parse_channels
from ..core.errors import require
from ..core.formats import resolve_format
from ..core.trajectory import Trajectory, filmstrip, plots, recorded_run, summary, summary_text
from ..core.validate import excerpt
from .common import (CATEGORY, MODEL_HINT, format_input, json_text, latent_format, node_errors,
                     optional_latent_format, samples_of, ui_result, with_samples)
from .factors import factors_input, rgb_affine, validate_factors_choice

AREA = f"{CATEGORY}/Correct"
SCALED = " In scaled units ((raw - shift) x scale, the sampler's and the SDXL-latent blog's units; SDXL ends near ±4)."
LATENT_IN = ("LATENT", {"tooltip": "The latent to correct. Each batch item is corrected on its own (a video item over "
                                   "all its frames); the input is not changed."})
LATENT_OUT = "The corrected latent (raw values, like any LATENT), tagged with its format."


def channels_input(operation: str, what: str) -> tuple:
    defaults = ops.FORMAT_DEFAULTS
    return ("STRING", {
        "default": "auto",
        "tooltip": f"Channels to {what}. auto: SDXL {defaults['sdxl']['channels'][operation]}, "
                   f"SD1.x {defaults['sd15']['channels'][operation]} (other formats need an explicit choice: "
                   "their channel meanings are unknown). Or 'all', or a comma list of indices (0-based), ranges "
                   "(0-2) and SDXL names (luminance, cyan/red, lime/purple, pattern).",
    })


def strength_input(what: str) -> tuple:
    return ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                      "tooltip": f"How much of the {what} to apply: 0 leaves the latent as it is, 1 applies it fully."})


PER_FRAME = ("BOOLEAN", {"default": False, "tooltip": "Video latents: correct each frame on its own (its own means, "
                                                   "extremes and factors) instead of each item over all its frames. "
                                                   "No effect on image latents."})


def _each(samples, per_frame: bool, operation):
    """operation(samples), or on each frame of a video latent on its own when per_frame is set."""
    if not per_frame or samples.ndim != 5:
        return operation(samples)
    return ops.items_as_frames(operation(ops.frames_as_items(samples)), samples.shape)


def _latent_and_format(latent, format_choice, model):
    # NaN and inf are caught by each operation's check of its own result, not by a separate scan.
    samples = samples_of(latent, finite=False, video=True)
    return samples, latent_format(latent, format_choice, model)


class LatentCenter:
    DESCRIPTION = ("Removes color casts by centering: subtracts each chosen channel's mean x its strength, then the "
                   "mean over all channels x the global strength; each batch item on its own. Full strengths give "
                   "every chosen channel a mean of 0 (scaled units).")
    CATEGORY = AREA
    FUNCTION = "center"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (LATENT_OUT,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_IN,
                "format": format_input(" Centering happens in scaled units (matters where a format has a shift)."),
                "channels": channels_input("center", "center (a ':0.5' after a channel sets its own strength)"),
                "channel_strength": strength_input("per-channel mean subtraction"),
                "global_strength": strength_input("mean over all channels subtraction, applied after the per-channel one"),
            },
            "optional": {"model": MODEL_HINT, "per_frame": PER_FRAME},
        }

    @node_errors("Latent Center")
    def center(self, latent, format, channels, channel_strength, global_strength, model=None, per_frame=False):
        samples, fmt = _latent_and_format(latent, format, model)
        strengths = parse_channels(channels, samples.shape[1], fmt, "center", channel_strength)
        out = _each(samples, per_frame, lambda x: ops.center(x, strengths, global_strength, fmt.shift, scale=fmt.scale))
        return (with_samples(latent, out, fmt),)


class LatentSoftClamp:
    DESCRIPTION = ("Pulls outliers in: values beyond ±threshold are mapped linearly onto [threshold, boundary] "
                   "(the SDXL-latent blog's soft clamp), each batch item on its own. An item already inside "
                   "±boundary is left exactly as it is; values inside ±threshold never change." + SCALED)
    CATEGORY = AREA
    FUNCTION = "clamp"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (LATENT_OUT,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_IN,
                "format": format_input(" Needed to convert to scaled units."),
                "threshold": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.05,
                                        "tooltip": "Values with |x| up to this are left alone." + SCALED}),
                "boundary": ("FLOAT", {"default": 4.0, "min": 0.01, "max": 100.0, "step": 0.05,
                                       "tooltip": "No corrected value goes beyond ±boundary; must exceed the threshold." + SCALED}),
                "mode": (list(ops.CLAMP_MODES), {"default": "pixel",
                         "tooltip": "pixel (the blog's): a value's range runs up to the largest value across channels at "
                                    "its pixel. channel: up to the largest value of its channel in the item."}),
                "strength": strength_input("soft clamp"),
            },
            "optional": {"model": MODEL_HINT, "per_frame": PER_FRAME},
        }

    @node_errors("Latent Soft Clamp")
    def clamp(self, latent, format, threshold, boundary, mode, strength, model=None, per_frame=False):
        samples, fmt = _latent_and_format(latent, format, model)
        out = _each(samples, per_frame, lambda x: ops.soft_clamp(x, threshold, boundary, mode, strength=strength,
                                                                 scale=fmt.scale, shift=fmt.shift))
        return (with_samples(latent, out, fmt),)


class LatentMaximize:
    DESCRIPTION = ("Fills the value range: multiplies the chosen channels by one factor per batch item so their "
                   "largest |value| equals the boundary (by default SDXL's luminance and color channels, its "
                   "pattern channel left alone)." + SCALED)
    CATEGORY = AREA
    FUNCTION = "maximize"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (LATENT_OUT,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_IN,
                "format": format_input(" Needed to convert to scaled units."),
                "channels": channels_input("maximize", "scale"),
                "boundary": ("FLOAT", {"default": 4.0, "min": 0.01, "max": 100.0, "step": 0.05,
                                       "tooltip": "The largest |value| of the chosen channels after scaling." + SCALED}),
                "strength": strength_input("scaling"),
            },
            "optional": {"model": MODEL_HINT, "per_frame": PER_FRAME},
        }

    @node_errors("Latent Maximize")
    def maximize(self, latent, format, channels, boundary, strength, model=None, per_frame=False):
        samples, fmt = _latent_and_format(latent, format, model)
        chosen = chosen_channels(channels, samples.shape[1], fmt, "maximize")
        out = _each(samples, per_frame, lambda x: ops.maximize(x, boundary, chosen, strength, fmt.scale, fmt.shift))
        return (with_samples(latent, out, fmt),)


def _hex_colors(rgb) -> list[str]:
    """'#rrggbb' for each row of a [N, 3] tensor of colors in 0..1 (clamped)."""
    codes = (rgb.clamp(0, 1) * 255).round().int().tolist()
    return ["#%02x%02x%02x" % tuple(code) for code in codes]


class LatentColorBalance:
    DESCRIPTION = ("Removes a color cast: solves by least squares for per-channel offsets that move each batch "
                   "item's linear-preview mean color to the target (a gray of the same brightness by default), "
                   "using the format's RGB factors or a fitted factor file. Exact for the linear preview's "
                   "(unclamped) mean; the decoded image follows only as far as the factors match the VAE.")
    CATEGORY = AREA
    FUNCTION = "balance"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (LATENT_OUT,)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": LATENT_IN,
                "format": format_input(" Not needed with a fitted factor file and explicit channels."),
                "factors": factors_input(),
                "target": ("STRING", {"default": "neutral",
                                      "tooltip": "The mean color to reach: neutral (gray with the current Rec. 709 "
                                                 "brightness: removes the cast, keeps brightness) or a hex color "
                                                 "such as #808080."}),
                "channels": channels_input("color_balance", "shift"),
                "strength": strength_input("offsets"),
            },
            "optional": {"model": MODEL_HINT, "per_frame": PER_FRAME},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, factors):
        return validate_factors_choice(factors)

    @node_errors("Latent Color Balance")
    def balance(self, latent, format, factors, target, channels, strength, model=None, per_frame=False):
        samples = samples_of(latent, finite=False, video=True)
        goal = ops.parse_color(target)
        affine = rgb_affine(latent, factors, format, model)
        fmt = self._format(latent, format, model, channels)
        chosen = chosen_channels(channels, samples.shape[1], fmt, "color_balance")
        # Offsets commute with the units: raw values with raw-input factors give the scaled result exactly.
        frames = samples.shape[2] if per_frame and samples.ndim == 5 else 0
        result = ops.balance(ops.frames_as_items(samples) if frames else samples, affine, goal, chosen, strength)
        out = ops.items_as_frames(result.latent, samples.shape) if frames else result.latent
        names = [f"item {i // frames} frame {i % frames}" if frames else f"item {i}" for i in range(len(result.before))]
        text = "\n".join(f"{name}: mean color {b} -> {a}" for name, b, a in
                          zip(names, _hex_colors(result.before), _hex_colors(result.after)))
        return ui_result((with_samples(latent, out, fmt),), text=text)

    @staticmethod
    def _format(latent, format_choice, model, channels):
        """Explicit channels and a fitted factor file need no format."""
        return optional_latent_format(latent, format_choice, model, needed=channels.strip().lower() == "auto")


def _model_format(model, format_choice):
    catalog, hint = format_catalog(), model_format(model)
    chosen = catalog.get(format_choice)
    ndim = hint.latent_ndim if hint is not None else chosen.latent_ndim if chosen is not None else 4
    return resolve_format(format_choice, model_latent_channels(model), hint, catalog, ndim)


PRESET_CHOICES = tuple(schedules.PRESETS) + ("custom",)


class LatentCorrection:
    DESCRIPTION = ("Corrects the x0 prediction at each sampling step by a schedule of Latent Lab operations "
                   "(soft clamp, center, maximize, color balance), each in a window of the sampling progress. "
                   "A post-CFG patch: works with every sampler (Euler included), KSampler, KSamplerAdvanced and "
                   "SamplerCustomAdvanced, batches (each item on its own) and img2img, and chains with other "
                   "post-CFG patches without taking the CFG-function slot.")
    CATEGORY = AREA
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the correction added to its post-CFG functions (connect it to the sampler).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to patch (SD1.x or SDXL for the presets; any format with a custom schedule)."}),
                "preset": (list(PRESET_CHOICES), {"default": "blog",
                           "tooltip": "blog: the SDXL-latent blog's schedule mapped from its diffusers timesteps to "
                                      "progress (soft clamp 0-4.9%, center 0-29.9%, center + maximize 90-99.8%; exact on the model timeline). "
                                      "blog without maximize: the same without the final range fill. "
                                      "custom: the schedule text below."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "Multiplies every operation's strength; 0 leaves sampling exactly as without the patch."}),
                "timeline": (list(TIMELINES), {"default": "run",
                             "tooltip": "What the percent windows measure. run: this sampler run's steps (img2img "
                                        "and KSamplerAdvanced ranges run 0-100% themselves). model: the model's whole "
                                        "noise range, as ControlNet start/end percent (a split base/refiner run shares "
                                        "one timeline; an img2img run starts part-way)."}),
                "schedule": ("STRING", {"multiline": True, "default": schedules.schedule_text(schedules.blog_schedule()),
                             "tooltip": "Used when preset is custom. One operation per line: name start-end% then "
                                        "key=value options. Names: soft_clamp (threshold, boundary, mode pixel|channel, "
                                        "relative yes|no), center (channels, channel, global), maximize (channels, "
                                        "boundary), color_balance (channels, target neutral|#rrggbb); every one takes "
                                        "strength (0..1). Limits in scaled units; '#' starts a comment."}),
                "format": format_input(" Sets channel defaults, the maximize boundary and the color-balance factors."),
            },
        }

    @node_errors("Latent Correction")
    def patch(self, model, preset, strength, timeline, schedule, format):
        fmt = _model_format(model, format)
        require(preset in PRESET_CHOICES, f"Unknown preset '{excerpt(preset)}'.",
                f"Use one of: {', '.join(PRESET_CHOICES)}.")
        require(timeline in TIMELINES, f"Unknown timeline '{excerpt(timeline)}'.", f"Use one of: {', '.join(TIMELINES)}.")
        ops.check_strength(strength)
        operations = schedules.parse_schedule(schedule) if preset == "custom" else schedules.PRESETS[preset]()
        steps = schedules.compile_schedule(operations, fmt)
        text = f"{fmt.label} · strength {strength:g} · timeline {timeline}\n" + schedules.schedule_text(operations)
        return ui_result((correction_model(model, steps, strength, timeline),), text=text)


class LatentTrajectoryRecorder:
    DESCRIPTION = ("Records the x0 prediction of every model call while sampling (per-channel mean, std, min, max "
                   "and a small linear preview), for the Latent Trajectory node. Place it after Latent Correction "
                   "to record corrected predictions, before it to record uncorrected ones.")
    CATEGORY = AREA
    FUNCTION = "record"
    RETURN_TYPES = ("MODEL", "LATENT_TRAJECTORY")
    RETURN_NAMES = ("model", "trajectory")
    OUTPUT_TOOLTIPS = ("The model with the recorder attached (connect it to the sampler).",
                       "The record the sampler fills; connect it to Latent Trajectory.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to record."}),
                "preview_side": ("INT", {"default": 64, "min": 8, "max": 256,
                                         "tooltip": "Previews are kept at latent resolution, shrunk to at most this many cells a side."}),
                "timeline": (list(TIMELINES), {"default": "run", "tooltip": "How progress is measured (as in Latent Correction)."}),
                "format": format_input(" Sets the preview factors and channel names."),
            },
        }

    @node_errors("Latent Trajectory Recorder")
    def record(self, model, preview_side, timeline, format):
        fmt = _model_format(model, format)
        record = Trajectory(ops.scaled_affine(fmt.rgb_affine(), fmt), fmt.channel_names, preview_side)
        return (trajectory_model(model, record, timeline), record)


class LatentTrajectory:
    DESCRIPTION = ("Shows how the x0 prediction drifted and spread during sampling: a filmstrip of its linear "
                   "preview and plots of per-channel min/max and mean ± std over sampling progress (scaled units), "
                   "one of each per batch item.")
    CATEGORY = AREA
    FUNCTION = "view"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("filmstrip", "plot", "json")
    OUTPUT_TOOLTIPS = ("One row of x0 previews per batch item, labeled with progress and sigma.",
                       "Per-channel min/max (top) and mean ± std (bottom) over progress, one image per batch item.",
                       "First and last recorded statistics per item and channel, as JSON.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "trajectory": ("LATENT_TRAJECTORY", {"tooltip": "From Latent Trajectory Recorder."}),
                "latent": ("LATENT", {"tooltip": "The sampler's output LATENT: makes this node run after sampling and "
                                                 "picks the run that produced it."}),
                "frames": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip": "Frames in the filmstrip, spread evenly, first and last call included."}),
                "tile_width": ("INT", {"default": 128, "min": 32, "max": 512, "tooltip": "Width of each filmstrip frame in pixels."}),
                "boundary": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.5,
                                       "tooltip": "Dashed ±reference lines on the min/max plot (0: none)." + SCALED}),
            },
        }

    @node_errors("Latent Trajectory")
    def view(self, trajectory, latent, frames, tile_width, boundary):
        require(hasattr(trajectory, "find_run"), "The trajectory input is not a Latent Lab trajectory record.",
                "Connect the trajectory output of Latent Trajectory Recorder.")
        samples = latent.get("samples") if isinstance(latent, dict) else None
        run, matched = recorded_run(trajectory, samples)
        names = trajectory.channel_names
        strip = filmstrip(run, frames, tile_width)
        plot = plots(run, names, boundary)
        report = summary(run, names)
        report["matched_latent"] = matched
        return ui_result((strip, plot, json_text(report)), text=summary_text(report, matched),
                         images=preview_images(strip, "latentlab_film") + preview_images(plot, "latentlab_plot"))


NODES = {
    "LatentLabCenter": (LatentCenter, "Latent Center"),
    "LatentLabSoftClamp": (LatentSoftClamp, "Latent Soft Clamp"),
    "LatentLabMaximize": (LatentMaximize, "Latent Maximize"),
    "LatentLabColorBalance": (LatentColorBalance, "Latent Color Balance"),
    "LatentLabCorrection": (LatentCorrection, "Latent Correction"),
    "LatentLabTrajectoryRecorder": (LatentTrajectoryRecorder, "Latent Trajectory Recorder"),
    "LatentLabTrajectory": (LatentTrajectory, "Latent Trajectory"),
}
