"""Probe: find latent cells that smuggle global information through a VAE, map their influence, repair them."""

from ..adapters.comfy_objects import check_vae_matches
from ..adapters.runtime import Progress, intermediate_device
from ..adapters.ui import preview_images
from ..adapters.vae_probe import probe_vae
from ..core import probe, probe_render, spot_repair
from ..core.errors import require
from ..core.probe_report import REPORT_KEYS
from .common import CATEGORY, json_text, node_errors, samples_of, ui_result, with_samples

PROBE_CATEGORY = f"{CATEGORY}/Probe"
MAX_SEED = 2 ** 31 - 1
MAX_RADIUS = 16
SD_CELL = 8  # px per latent cell of SD-family VAEs


def image_tooltip() -> str:
    def side(radius):
        return probe.min_latent_side(radius) * SD_CELL
    return (f"The image to encode; RGB. Each side needs at least (2 x radius + 2) latent cells: {side(1)}x{side(1)} px "
            f"at radius 1, {side(3)}x{side(3)} px at radius 3, {side(MAX_RADIUS)}x{side(MAX_RADIUS)} px at radius "
            f"{MAX_RADIUS} (SD-family VAEs, 8 px per cell). Cropped to a multiple of 8 like VAE Encode.")


class VAEAnomalyProbe:
    DESCRIPTION = ("Looks for latent cells a VAE's encoder uses to smuggle global information (the SD1.x/2.x "
                   "'black hole'): reads the encoder's raw mean and log-variance (before ComfyUI's clamp), flags "
                   "robust outliers, and measures how much perturbing a cell changes the decoded image outside a "
                   "local window (far-field influence, x median cell). verify: flagged cells vs sampled ordinary "
                   "cells in a few decodes. map: every cell, randomized vector-Jacobian products. brute: exact, "
                   "small latents only. Never tiles: sizes that do not fit are refused.")
    CATEGORY = PROBE_CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "MASK", "IMAGE", "IMAGE", "IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("latent", "flag_mask", "logvar_map", "magnitude_map", "influence_map", "report", "verdict")
    OUTPUT_TOOLTIPS = (
        "The encoder's mean for the probed image (raw, like VAE Encode without tiling), for Latent Spot Repair.",
        "Flagged cells as a MASK at the probed image's size (each cell is 8x8 px).",
        "Channel-mean log-variance per cell, read before the clamp; dark = low; flagged cells ringed.",
        "Robust z of the mean's magnitude per cell (red = brighter than typical); flagged cells ringed.",
        "Far-field influence / median cell, log scale (red = more global influence); gray = not measured.",
        f"The full report as JSON (keys: {', '.join(REPORT_KEYS)}).",
        "One line: what was found, also shown on the node.",
    )
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE to probe (SD1.x/2.x, SDXL, SD3, Flux, TAESD...)."}),
                "image": ("IMAGE", {"tooltip": image_tooltip()}),
                "mode": (list(probe.MODES), {"default": "verify", "tooltip": "verify: flagged cells vs a random sample of ordinary cells, in at most verify_decodes decodes. map: influence of every cell within map_passes decoder-equivalent passes. brute: exact central differences, 2 x channels x cells decodes (small latents only; the reference)."}),
                "threshold": ("FLOAT", {"default": 6.0, "min": 2.0, "max": 100.0, "step": 0.5, "tooltip": "Flag a cell when its channel-mean log-variance is this many robust standard deviations (1.4826 x MAD) below the median, or its mean magnitude this many above."}),
                "radius": ("INT", {"default": 3, "min": 1, "max": MAX_RADIUS, "tooltip": "Half-size of the local window, in latent cells: far field = pixels more than this many cells away."}),
                "verify_decodes": ("INT", {"default": 8, "min": 3, "max": 64, "tooltip": "verify mode: decodes in all (one base, the rest split between flagged cells and samples of ordinary cells)."}),
                "map_passes": ("INT", {"default": 24, "min": 3, "max": 2000, "tooltip": "map mode: budget in decoder-equivalent passes (one forward = 1, each vector-Jacobian product = 2)."}),
                "probe_seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "tooltip": "Seed for the sampled cells, directions and probe signs."}),
                "sweep_sizes": ("STRING", {"default": "", "tooltip": "Optional resolution scan: longer-side sizes in px, e.g. '256, 384, 512' (at most 12 sizes, each up to 4096 px). The image is resized and encoded at each; flags per size go to the report's 'resolutions' (encodes only)."}),
                "image_index": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip": "Which image of the batch to probe."}),
            },
        }

    @node_errors("VAE Anomaly Probe")
    def run(self, vae, image, mode, threshold, radius, verify_decodes, map_passes, probe_seed, sweep_sizes, image_index):
        options = probe.ProbeOptions(mode=mode, threshold=threshold, radius=radius, verify_decodes=verify_decodes,
                                     map_passes=map_passes, seed=probe_seed, scan_sizes=probe.parse_scan_sizes(sweep_sizes),
                                     image_index=image_index)
        probed = probe_vae(vae)
        plan = probe.plan_probe(probed, image, options)
        progress = Progress(probe.progress_units(plan, probed.channels))
        probed.tick = lambda n: progress.update(int(round(n)))
        result = probe.run_probe(probed, plan)
        report = result.report
        marks = result.flags.ranked
        maps = (probe_render.logvar_map(result.stats, marks, threshold),
                probe_render.magnitude_map(result.stats, marks, threshold),
                probe_render.influence_map(result.ratio, report["influence"], marks))
        device = intermediate_device()
        latent = {"samples": result.mean.detach().float().to(device)}
        mask = probe_render.mask_image(result.flags.mask, report["latent"]["downscale"]).to(device)
        text = "\n".join([report["verdict"], summary_line(report)] + report["notes"])
        shown = [entry for m in maps for entry in preview_images(m, "latentlab_probe")]
        report_text = json_text(report)
        out = ui_result((latent, mask, *(m.to(device) for m in maps), report_text, report["verdict"]),
                        text=text, images=shown)
        out["ui"]["report"] = [report_text]  # in /history too, for API users
        return out


def summary_line(report: dict) -> str:
    section = report["influence"]
    line = (f"{section['mode']} mode: {section['decoder_equivalent_passes']:g} decoder-equivalent passes, "
            f"{section['wall_seconds']:.1f} s; latent {report['latent']['shape'][1]}x{report['latent']['shape'][2]}")
    for row in report["resolutions"]:
        line += f"\nresolution {row['size'][1]}x{row['size'][0]}: {row['flag_count']} flagged"
    return line


class LatentSpotRepair:
    DESCRIPTION = ("Replaces chosen latent cells (a MASK, or the flagged cells of a VAE Anomaly Probe report) by an "
                   "interpolation of their unchosen neighbours, per channel. With a VAE connected, re-probes and "
                   "reports each repaired cell's far-field influence before and after (x median ordinary cell).")
    CATEGORY = PROBE_CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "report")
    OUTPUT_TOOLTIPS = ("The latent with the cells repaired (other cells and keys unchanged).",
                       "JSON: method, repaired cells and, with a VAE, far-field influence before and after.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "The latent to repair (raw, as VAE Encode or the probe gives it)."}),
                "method": (list(spot_repair.METHODS), {"default": "harmonic", "tooltip": "harmonic: the smoothest fill from the surrounding cells (Laplace). inverse_distance: weighted mean of nearby unchosen cells, 1/d^2."}),
                "radius": ("INT", {"default": 3, "min": 1, "max": 16, "tooltip": "Re-probe only: local window half-size in cells (as in the probe)."}),
                "verify_decodes": ("INT", {"default": 8, "min": 3, "max": 64, "tooltip": "Re-probe only: decodes per state (before and after each use this many)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Cells to repair: the probe's flag_mask, or any mask at the latent's size or x8 (a cell counts if any of its pixels is > 0.5)."}),
                "report": ("STRING", {"forceInput": True, "tooltip": "Or: a VAE Anomaly Probe report; its flagged cells are repaired."}),
                "vae": ("VAE", {"tooltip": "Optional: re-probe with this VAE and report the influence before and after (batch item 0)."}),
            },
        }

    @node_errors("Latent Spot Repair")
    def run(self, latent, method, radius, verify_decodes, mask=None, report=None, vae=None):
        samples = samples_of(latent)
        _, channels, height, width = samples.shape
        require(mask is not None or report, "Nothing says which cells to repair.",
                "Connect the probe's flag_mask or its report.")
        cells = None
        if mask is not None:
            cells = spot_repair.cells_from_mask(mask, height, width)
        if report:
            from_report = spot_repair.cells_from_report(report, height, width)
            cells = from_report if cells is None else cells | from_report
        if not cells.any():  # nothing flagged (an SDXL VAE, an image without a spot): the latent passes unchanged
            result = {"method": method, "cells": []}
            text = "No cell is marked for repair: the latent passes through unchanged."
            return ui_result((latent, json_text(result)), text=text)
        repaired = spot_repair.repair(samples, cells, method)
        result = {"method": method, "cells": [list(c) for c in cells.any(0).nonzero().tolist()]}
        text = f"{method}: {len(result['cells'])} cell(s) repaired"
        if vae is not None:
            check_vae_matches(vae, channels)
            progress = Progress(2 * verify_decodes)
            probed = probe_vae(vae, tick=lambda n: progress.update(int(round(n))))
            probe.check_fits(probed, [probe.MemoryNeed(height * probed.downscale, width * probed.downscale, "verify")])
            item_cells = cells[:1]
            if item_cells.any():
                result["reprobe"] = spot_repair.reprobe(probed.decode, samples, repaired, item_cells, radius,
                                                        probed.downscale, verify_decodes)
                text += "\n" + spot_repair.reprobe_text(result["reprobe"])
        report_text = json_text(result)
        out = ui_result((with_samples(latent, repaired), report_text), text=text)
        out["ui"]["report"] = [report_text]
        return out


NODES = {
    "LatentLabVAEAnomalyProbe": (VAEAnomalyProbe, "VAE Anomaly Probe"),
    "LatentLabSpotRepair": (LatentSpotRepair, "Latent Spot Repair"),
}
