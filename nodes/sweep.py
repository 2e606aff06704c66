"""Sweep: every CFG value (and guidance value, and seed) in one batched sampling pass, and a labeled grid."""
import torch

from ..adapters.sweep_sampler import (DOWNSCALE_KEYS, check_guidance_model, check_inputs, per_cell_batches,
                                      sampler_names, scheduler_names, sweep_sample)
from ..adapters.ui import preview_images
from ..core import grid as grids
from ..core.errors import require
from ..core.sweep_grammar import SEED_RANGE, WHITESPACE, SweepGrammarError, parse_values
from ..core.sweep_plan import (GUIDANCE_ORDER_TEXT, ORDER_TEXT, check_cell_count, check_info, check_settings,
                               make_cells, settings_line, sweep_info)
from ..core.validate import check_image
from .common import CATEGORY, node_errors, samples_of, ui_result, with_samples

AREA = f"{CATEGORY}/Sweep"
MODEL_BATCH = ("auto", "all cells", "per cell (exact)")
AUTO, BATCHED, EXACT = MODEL_BATCH


def check_choice(name: str, value, choices: list) -> None:
    # KSampler would silently put its first entry in place of an unknown name
    require(isinstance(value, str) and value in choices, f"Unknown {name} {value!r:.60}.",
            f"Pick one of ComfyUI's: {', '.join(choices[:8])}{'…' if len(choices) > 8 else ''}.")


def parse_axes(cfg_values: str, seeds: str, seed: int) -> tuple:
    require(isinstance(cfg_values, str) and isinstance(seeds, str), "cfg_values and seeds must be text.",
            "Write them as text, e.g. cfg_values '3, 5, 7' and seeds '' or '+4'.")
    cfgs = parse_values(cfg_values, "cfg")
    seed_list = parse_values(seeds, "seed", base_seed=seed) if seeds.strip() else [seed]
    return cfgs, seed_list


def parse_guidance(guidance_values) -> list | None:
    """The guidance values, or None (no guidance axis) for an empty list."""
    require(isinstance(guidance_values, str), "guidance_values must be text.",
            "Write it as text, e.g. '' (no guidance axis) or '2-5 [4]'.")
    return parse_values(guidance_values, "guidance") if guidance_values.strip(WHITESPACE) else None


def sweep_latent(latent) -> "torch.Tensor":
    """The starting latent: any shape a model samples ([B, C, H, W] images, [B, C, T, H, W] video, [B, C, L]...)."""
    require(isinstance(latent, dict) and isinstance(latent.get("samples"), torch.Tensor),
            "The latent_image input is not a ComfyUI latent (a dict with a 'samples' tensor).",
            "Connect a LATENT output (Empty Latent Image, an empty video latent, VAE Encode...).")
    samples = latent["samples"]
    if getattr(samples, "is_nested", False):
        return samples  # check_inputs refuses it with its own message
    require(samples.ndim >= 3 and samples.numel() > 0,
            f"The latent_image has shape {tuple(samples.shape)}; a latent is [batch, channels, ...] with at least one "
            "spatial or time dimension and no empty one.", "Connect a LATENT output.")
    return samples_of(latent, video=True) if samples.ndim in (4, 5) else samples


class CFGSweepSampler:
    DESCRIPTION = ("Samples every CFG value of a list (and optionally several seeds, and for guidance-distilled models "
                   "such as Flux.1-dev several guidance values) in one batched pass. Each cell gets the noise, "
                   "sigmas, guidance and CFG arithmetic of a separate KSampler run with its seed and CFG (after "
                   "FluxGuidance with its guidance); cells that share a seed and guidance share their first model "
                   "evaluation, and CFG 1 skips the negative pass. Output order: " + ORDER_TEXT + "; with "
                   "guidance values: " + GUIDANCE_ORDER_TEXT + ".")
    CATEGORY = AREA
    FUNCTION = "sweep"
    RETURN_TYPES = ("LATENT", "SWEEP_INFO", "STRING")
    RETURN_NAMES = ("latent", "sweep_info", "labels")
    OUTPUT_TOOLTIPS = (
        "One latent per cell, seed-major: all CFG values of the first seed (of its first guidance value, then the "
        "next), then of the next seed.",
        "Axes, values, labels, cell order, fixed settings and run figures; connect it to Sweep Grid.",
        "The cell labels, one per line, in cell order (e.g. 'CFG 7.5', 'CFG 7.5 · seed 43' or 'guidance 3.5').",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model used for denoising (patches such as RescaleCFG and "
                                               "Latent Correction are applied per cell)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_RANGE[1], "control_after_generate": True,
                                 "tooltip": "The seed of every cell, unless the seeds list below adds a seed axis."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps (as KSampler)."}),
                "cfg_values": ("STRING", {"default": "3, 5, 7, 9, 11", "tooltip":
                               "The CFG values to sweep, A1111 style: '3, 5.5, 7'; '2-12 [6]' (6 values from 2 "
                               "to 12); '2-12 (+2)' (step 2); mixed: '1, 4-8 (+2), 12'. Values 0-100, each once."}),
                "sampler_name": (sampler_names(), {"tooltip": "The sampler (as KSampler). Ancestral and SDE "
                                                              "samplers get per-cell noise equal to separate runs. A "
                                                              "sampler the sweep does not classify (one newer than "
                                                              "it) runs each cell alone, as a separate run."}),
                "scheduler": (scheduler_names(), {"tooltip": "The scheduler (as KSampler)."}),
                "positive": ("CONDITIONING", {"tooltip": "What to include (one prompt)."}),
                "negative": ("CONDITIONING", {"tooltip": "What to exclude (one prompt)."}),
                "latent_image": ("LATENT", {"tooltip": "The starting latent, batch 1 (Empty Latent Image for "
                                                       "text-to-image, a VAE Encode for img2img)."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "How much to denoise (as KSampler); below 1 for img2img."}),
                "seeds": ("STRING", {"default": "", "tooltip":
                          "Optional second axis (grid rows). Empty: only the seed above. '+4': the seed and the next "
                          "3. Or a list: '1, 5, 9', '100-103'."}),
                "max_batch": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip":
                              "Most cells sampled together. 0: as many as ComfyUI's free-memory estimate allows. "
                              "Results do not depend on it."}),
                "model_batch": (list(MODEL_BATCH), {"default": AUTO, "tooltip":
                                "all cells: one model call covers every cell of a chunk (fastest, most of all on a "
                                "GPU); each cell matches a separate KSampler run up to float rounding of batched "
                                "kernels (about 1e-6 of the latent's range). per cell (exact): one model call per "
                                "cell, in the batch a KSampler run uses, so every cell is bitwise equal to a "
                                "separate run. auto: per cell on a CPU (where batching gains little), all cells "
                                "on a GPU."}),
                "max_cells": ("INT", {"default": 64, "min": 1, "max": 4096, "tooltip":
                              "Refuse sweeps with more cells than this (CFG values x guidance values x seeds), so a "
                              "typo cannot start a huge run. Raise it for big grids."}),
            },
            "optional": {
                "guidance_values": ("STRING", {"default": "", "tooltip":
                                    "Guidance-distilled models (Flux.1-dev, HunyuanVideo...): the guidance values to "
                                    "sweep, same grammar as cfg_values (e.g. '2-5 [4]'). Each cell's positive "
                                    "conditioning gets its guidance as FluxGuidance would set it; keep CFG at 1 for "
                                    "these models. Empty: no guidance axis (the conditioning's own guidance)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg_values=None, seeds=None, guidance_values=None):
        try:
            if isinstance(cfg_values, str):
                parse_values(cfg_values, "cfg")
            if isinstance(seeds, str) and seeds.strip():
                parse_values(seeds, "seed")
            if isinstance(guidance_values, str) and guidance_values.strip(WHITESPACE):
                parse_values(guidance_values, "guidance")
        except SweepGrammarError as error:
            return f"CFG Sweep Sampler: {error}"
        return True

    @node_errors("CFG Sweep Sampler")
    def sweep(self, model, seed, steps, cfg_values, sampler_name, scheduler, positive, negative, latent_image,
              denoise, seeds, max_batch, model_batch, max_cells, guidance_values=""):
        seed, steps, denoise, max_batch, max_cells = check_settings(
            seed=seed, steps=steps, denoise=denoise, max_batch=max_batch, max_cells=max_cells).values()
        samples = sweep_latent(latent_image)
        require(model_batch in MODEL_BATCH, f"Unknown model_batch '{model_batch}'.",
                f"Use one of: {', '.join(MODEL_BATCH)}.")
        check_choice("sampler_name", sampler_name, sampler_names())
        check_choice("scheduler", scheduler, scheduler_names())
        require(samples.shape[0] == 1,
                f"The latent_image has a batch of {samples.shape[0]}; a sweep starts from one latent and makes "
                "the batch itself (one item per cell).",
                "Use Empty Latent Image with batch_size 1, or pick one item with Latent From Batch.")
        cfgs, seed_list = parse_axes(cfg_values, seeds, seed)
        guidances = parse_guidance(guidance_values)
        check_cell_count(len(cfgs) * len(seed_list) * len(guidances or [None]), max_cells)
        cells = make_cells(cfgs, seed_list, guidances)
        check_inputs(model, positive, negative, latent_image)
        if guidances is not None:
            check_guidance_model(model)
        per_cell = per_cell_batches(model, auto=model_batch == AUTO, exact=model_batch == EXACT,
                                    sampler_name=sampler_name)
        result, run = sweep_sample(model, positive, negative, latent_image, cells, steps, sampler_name,
                                   scheduler, denoise, max_batch, per_cell=per_cell)
        settings = {"sampler": sampler_name, "scheduler": scheduler, "steps": steps, "denoise": denoise,
                    "seed": seed, "model_batch": model_batch}
        info = sweep_info(cfgs, seed_list, cells, settings, run, cfg_values, seeds, guidances,
                          guidance_values if guidances is not None else "")
        out = with_samples(latent_image, result)
        out.pop("batch_index", None)  # the cells are new items, not picks from a batch
        for key in DOWNSCALE_KEYS:  # sampled at the model's own size, as KSampler's output
            out.pop(key, None)
        labels = "\n".join(cell.label for cell in cells)
        return ui_result((out, info, labels), text=summary(info))


def summary(info: dict) -> str:
    run = info["run"]
    axes = " x ".join(f"{len(axis['values'])} {axis['title'].split()[0]}" for axis in info["axes"].values())
    lines = [f"{len(info['cells'])} cells: {axes} ({info['order']}) · chunks {run['chunks']} · "
             f"model batch: {run['model_batch']}",
             f"model rows evaluated {run['rows_evaluated']} of {run['rows_separate_runs']} for separate runs "
             f"({run['rows_shared']} shared) · step noise: {run['noise']}"]
    if run.get("model_batch_note"):
        lines.append(f"per cell: {run['model_batch_note']}")
    if run.get("chunk_note"):
        lines.append(f"chunks: {run['chunk_note']}")
    return "\n".join(lines)


class SweepGrid:
    DESCRIPTION = ("Lays decoded sweep cells out as one labeled grid: CFG values as columns ('CFG 7.5'), seeds as "
                   "rows (or guidance values, 'guidance 3.5', as columns or rows), axis titles and an optional "
                   "footer with the fixed settings; a video sweep shows each cell's middle frame. Uses Pillow's "
                   "built-in font; refuses grids above a pixel budget.")
    CATEGORY = AREA
    FUNCTION = "grid"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("grid",)
    OUTPUT_TOOLTIPS = ("The labeled grid, one image [1, H, W, 3].",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The decoded sweep latent (VAE Decode of the sampler's latent), "
                                                "one image per cell in the sweep's order (a video sweep: the same "
                                                "number of frames per cell; the middle one is shown)."}),
                "sweep_info": ("SWEEP_INFO", {"tooltip": "The sweep_info output of CFG Sweep Sampler."}),
                "footer": ("BOOLEAN", {"default": True, "tooltip": "Add a footer line with sampler, scheduler, "
                                                                   "steps, denoise (and the seed for one row)."}),
                "cell_scale": ("FLOAT", {"default": 1.0, "min": 0.05, "max": 1.0, "step": 0.05,
                                         "tooltip": "Shrink every cell by this factor (for big sweeps)."}),
                "label_size": ("INT", {"default": 0, "min": 0, "max": 128, "tooltip":
                               "Label font size in pixels; 0 picks one from the cell size."}),
                "max_megapixels": ("FLOAT", {"default": 32.0, "min": 1.0, "max": 512.0, "step": 1.0, "tooltip":
                                   "Refuse grids larger than this many megapixels (lower cell_scale instead)."}),
            },
        }

    @node_errors("Sweep Grid")
    def grid(self, images, sweep_info, footer, cell_scale, label_size, max_megapixels):
        info = grids.grid_info(check_info(sweep_info))
        images = check_image(images)
        images = cell_images(images, len(info["cells"]))
        width, height = grids.scaled_size(images.shape[2], images.shape[1], cell_scale)
        spec = grid_spec(info, width, height, footer, label_size)
        budget = grids.pixel_budget(max_megapixels)
        layout = grids.layout(spec)
        grids.check_budget(layout, budget)  # before resizing what would be refused
        picture = grids.render_grid(grids.resize_images(images, width, height), spec, layout)
        return ui_result((picture,), images=preview_images(picture, "latentlab_sweep"))


def cell_images(images, cells: int):
    """One image per cell. A video sweep decodes to the same number of frames per cell, cell after cell (VAE Decode
    flattens [cells, frames] into one batch): each cell is shown by its middle frame."""
    frames, left = divmod(images.shape[0], cells)
    require(left == 0 and frames >= 1,
            f"The images input has {images.shape[0]} images but the sweep has {cells} cells.",
            "Decode the sweep's whole latent (VAE Decode) and connect that IMAGE, without filtering.")
    return images if frames == 1 else images[frames // 2::frames]


def grid_spec(info: dict, width: int, height: int, footer: bool, label_size: int) -> grids.GridSpec:
    x, y = info["axes"]["x"], info["axes"]["y"]
    many_rows = len(y["values"]) > 1
    return grids.GridSpec(
        rows=len(y["values"]), cols=len(x["values"]), cell_width=width, cell_height=height,
        col_labels=x["labels"], row_labels=y["labels"] if many_rows else None,
        x_title=x["title"], y_title=y["title"] if many_rows else None,
        footer=[settings_line(info)] if footer else [], font_size=label_size)


NODES = {
    "LatentLabCFGSweep": (CFGSweepSampler, "CFG Sweep Sampler"),
    "LatentLabSweepGrid": (SweepGrid, "Sweep Grid"),
}
