"""VAE anomaly-spot probe: one run, from an IMAGE to a report.

plan_probe checks every input before any work: the options, the image, the resolution-scan sizes, and the memory
that the probe and each scan encode will need (the VAE is loaded once for that check). run_probe then encodes the
image, takes per-cell statistics and flags from the encoder's raw moments (probe_moments), measures far-field
influence in one mode (probe_far_field), encodes the image at each resolution-scan size, and writes the report
once (probe_report).

The probe works on plain callables (ProbeVAE), so synthetic VAEs test it without ComfyUI.
"""
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

from .errors import LatentLabInputError, require
from .probe_far_field import (TINY_INFLUENCE, PassCounter, check_brute_size, check_map_budget, check_verify_decodes,
                              far_field_brute, far_field_map, far_field_verify, influence_ratio, map_passes_used,
                              sample_baseline)
from .probe_moments import (MAX_LISTED_CELLS, CellStats, Flags, cell_stats, check_moments, find_flags, flags_report,
                            measured_cells, moments_report)
from .probe_report import InfluenceReport, ProbeReport, resolution_row
from .validate import check_image, excerpt

MODES = ("verify", "map", "brute")
MAX_RADIUS = 64
MAX_SEED = 2 ** 63 - 1
MAX_VERIFY_DECODES = 1024
MAX_MAP_PASSES = 100_000
MAX_SCAN_SIZES = 12
MAX_SCAN_SIDE = 4096   # px, the longer side: an SD-family encode at this size already needs tens of GiB
MIN_SCAN_CELLS = 4     # latent cells on the longer side of a resolution-scan encode
SCAN_LISTED_CELLS = 8
TOP_CELLS = 8


@dataclass
class ProbeVAE:
    """What the probe needs from a VAE, as plain callables.

    encode_moments(pixels [1, 3, H, W] in 0..1) -> (mean [1, C, H/d, W/d], logvar of the same shape or None),
        logvar read before any clamp.
    decode(latent [B, C, h, w]) -> pixels [B, 3, h*d, w*d] in 0..1, NOT clamped; differentiable for map mode.
    bytes_needed(height, width, mode) ("encode", "verify", "map", "brute") and room(bytes) -> free bytes after
        making room (unloading other models): an optional memory check.
    channels: latent channels, when known before encoding (brute mode's size is then checked up front).
    tick(passes): optional progress callback; may raise to cancel.
    """
    encode_moments: Callable
    decode: Callable
    downscale: int = 8
    name: str = "VAE"
    notes: list = field(default_factory=list)
    max_batch: int = 16
    bytes_needed: Optional[Callable] = None
    room: Optional[Callable] = None
    tick: Optional[Callable] = None
    where: str = "this device"
    channels: Optional[int] = None


@dataclass
class ProbeOptions:
    mode: str = "verify"
    threshold: float = 6.0
    radius: int = 3
    verify_decodes: int = 8
    map_passes: int = 24
    seed: int = 0
    scan_sizes: tuple = ()   # resolution scan: longer sides in px, each encoded (no far field)
    image_index: int = 0


@dataclass
class ProbeResult:
    report: dict                      # JSON-ready (ProbeReport.as_dict)
    mean: torch.Tensor                # [1, C, h, w] raw latent
    logvar: Optional[torch.Tensor]
    stats: CellStats
    flags: Flags                      # mask [h, w] and the flagged cells, most severe first
    influence: torch.Tensor           # [h, w], NaN where not measured
    ratio: torch.Tensor               # [h, w], NaN where not measured


@dataclass(frozen=True)
class ProbePlan:
    """A probe whose inputs all passed: what to encode, where it came from, and the resolution-scan shapes."""
    options: ProbeOptions
    image: torch.Tensor      # the probed item, [1, H, W, 3]
    input_size: list         # [H, W] of the IMAGE
    batch: int
    pixels: torch.Tensor     # [1, 3, H', W'] cropped to whole cells
    offset: tuple            # (top, left) of the crop
    latent_size: tuple       # (h, w) in cells
    scan: tuple              # ((height, width), ...) per resolution-scan size


class MemoryNeed(NamedTuple):
    height: int
    width: int
    mode: str            # "encode", "verify", "map" or "brute"
    what: str = "image"  # "image" or "scan" (a resolution-scan encode)


# ---------------------------------------------------------------- inputs, sizes and memory, before any work

def min_latent_side(radius: int) -> int:
    """Every cell needs cells outside its window: 2 * radius + 2 cells per side."""
    return 2 * radius + 2


def parse_scan_sizes(text: str) -> tuple:
    """'256, 384 512' -> (256, 384, 512); each is the longer side in pixels."""
    if text is None or not str(text).strip():
        return ()
    parts = str(text).replace(",", " ").split()
    require(len(parts) <= MAX_SCAN_SIZES, f"{len(parts)} resolution-scan sizes given in sweep_sizes; at most "
            f"{MAX_SCAN_SIZES}.", "Probe fewer sizes.")
    sizes = []
    for part in parts:
        digits = part.lstrip("0")
        require(part.isascii() and part.isdigit() and digits,
                f"Resolution-scan size '{excerpt(part)}' (sweep_sizes) is not a positive whole number of pixels.",
                "Write sizes as pixel lengths of the longer side, for example '256, 384, 512'.")
        require(len(digits) <= len(str(MAX_SCAN_SIDE)), f"Resolution-scan size {excerpt(part)} px (sweep_sizes) is "
                f"larger than {MAX_SCAN_SIDE} px.", f"Use sizes up to {MAX_SCAN_SIDE} px (the longer side).")
        sizes.append(int(digits))
    return tuple(sizes)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_options(options: ProbeOptions, downscale: int) -> None:
    require(options.mode in MODES, f"Unknown mode '{excerpt(options.mode)}'.", f"Use one of: {', '.join(MODES)}.")
    require(_real(options.threshold) and options.threshold > 0, f"threshold {excerpt(options.threshold)} is not a "
            "positive number.", "Use 2 to 100 robust standard deviations (6 is the default).")
    require(_whole(options.radius) and 1 <= options.radius <= MAX_RADIUS,
            f"radius {excerpt(options.radius)} is out of range.", f"Use 1 to {MAX_RADIUS} cells (3 is typical).")
    require(_whole(options.verify_decodes) and options.verify_decodes <= MAX_VERIFY_DECODES,
            f"verify_decodes {excerpt(options.verify_decodes)} is not a whole number up to {MAX_VERIFY_DECODES}.",
            "Use 3 to 64 decodes (8 is the default).")
    check_verify_decodes(options.verify_decodes)
    require(_real(options.map_passes) and options.map_passes <= MAX_MAP_PASSES,
            f"map_passes {excerpt(options.map_passes)} is not a number up to {MAX_MAP_PASSES}.",
            "Use 3 to 2000 passes (24 is the default).")
    check_map_budget(options.map_passes)
    require(_whole(options.seed) and 0 <= options.seed <= MAX_SEED, f"The probe seed {excerpt(options.seed)} is out "
            "of range.", f"Use a whole number from 0 to {MAX_SEED}.")
    require(_whole(options.image_index), f"image_index {excerpt(options.image_index)} is not a whole number.",
            "Pick an index from 0 to batch size - 1.")
    check_scan_sizes(options.scan_sizes, downscale)


def check_scan_sizes(sizes: tuple, downscale: int) -> None:
    require(isinstance(sizes, (tuple, list)), f"The resolution-scan sizes are a {type(sizes).__name__}, not a list.",
            "Give them as a tuple of pixel sizes, for example (256, 384, 512).")
    require(len(sizes) <= MAX_SCAN_SIZES, f"{len(sizes)} resolution-scan sizes given; at most {MAX_SCAN_SIZES}.",
            "Probe fewer sizes.")
    smallest = MIN_SCAN_CELLS * downscale
    for size in sizes:
        require(_whole(size), f"Resolution-scan size {excerpt(size)} is not a whole number of pixels.",
                f"Use sizes from {smallest} to {MAX_SCAN_SIDE} px (the longer side).")
        require(size <= MAX_SCAN_SIDE, f"Resolution-scan size {excerpt(size)} px is larger than {MAX_SCAN_SIDE} px.",
                f"Use sizes up to {MAX_SCAN_SIDE} px (the longer side).")
        require(size >= smallest, f"Resolution-scan size {size} px is too small.",
                f"Use sizes of at least {smallest} px.")


def prepare_pixels(image: torch.Tensor, index: int, downscale: int, radius: int) -> tuple:
    """IMAGE [B, H, W, 3] -> (pixels [1, 3, H', W'] center-cropped to a multiple of downscale, (top, left))."""
    require(not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] > 0,
            "The IMAGE batch is empty (0 images).",
            "Connect an IMAGE that holds at least one image (Load Image, or VAE Decode of a sampler); an empty batch "
            "usually comes from a batch or list node given an index or count past its end.")
    check_image(image)
    require(0 <= index < image.shape[0], f"image_index {index} is out of range: the IMAGE batch has {image.shape[0]} item(s).",
            "Pick an index from 0 to batch size - 1.")
    _, height, width, _ = image.shape
    side = min_latent_side(radius) * downscale
    require(height >= side and width >= side,
            f"The image is {width}x{height} px; the probe needs at least {side}x{side} px "
            f"({min_latent_side(radius)} latent cells per side at radius {radius}).",
            "Use a larger image (256x256 or more is typical) or a smaller radius.")
    new_h, new_w = height // downscale * downscale, width // downscale * downscale
    top, left = (height % downscale) // 2, (width % downscale) // 2
    pixels = image[index:index + 1, top:top + new_h, left:left + new_w, :].movedim(-1, 1).float()
    return pixels, (top, left)


def scan_shape(height: int, width: int, longer: int, downscale: int) -> tuple:
    """(height, width) of an image resized so its longer side is `longer` px, both sides whole cells."""
    factor = longer / max(height, width)
    return (max(downscale, round(height * factor) // downscale * downscale),
            max(downscale, round(width * factor) // downscale * downscale))


def check_fits(vae: ProbeVAE, needs: list) -> None:
    """Refuse sizes whose passes would not fit in free memory, naming a size that would; the VAE is loaded (and
    room made) once for all `needs` (MemoryNeed). Never tiles."""
    if vae.bytes_needed is None or vae.room is None or not needs:
        return
    sized = [(float(vae.bytes_needed(need.height, need.width, need.mode)), need) for need in needs]
    needed, need = max(sized, key=lambda item: item[0])
    free = float(vae.room(needed))
    if needed <= free:
        return
    scale = math.sqrt(free / needed) * 0.9
    step = 4 * vae.downscale
    fit_h, fit_w = (max(step, int(need.height * scale) // step * step), max(step, int(need.width * scale) // step * step))
    what = "resolution-scan encode" if need.what == "scan" else f"probe in {need.mode} mode"
    problem = (f"A {need.width}x{need.height} px {what} needs about {needed / 2**30:.2f} GiB but only "
               f"{free / 2**30:.2f} GiB is free on {vae.where}; the probe never tiles (tiles make their own spots).")
    if need.what == "scan":
        fix = f"Drop sweep_sizes above about {max(fit_h, fit_w)} px, or free memory by unloading other models."
    else:
        fix = (f"Resize the image to about {fit_w}x{fit_h} px or smaller (for example with 'Upscale Image'), "
               f"use verify mode, or free memory by unloading other models.")
    raise LatentLabInputError(problem, fix)


def plan_probe(vae: ProbeVAE, image: torch.Tensor, options: ProbeOptions) -> ProbePlan:
    check_options(options, vae.downscale)
    pixels, offset = prepare_pixels(image, options.image_index, vae.downscale, options.radius)
    height, width = pixels.shape[2:]
    if options.mode == "brute" and vae.channels:
        check_brute_size(vae.channels, height // vae.downscale, width // vae.downscale)
    scan = tuple(scan_shape(image.shape[1], image.shape[2], size, vae.downscale) for size in options.scan_sizes)
    check_fits(vae, [MemoryNeed(height, width, "encode"), MemoryNeed(height, width, options.mode)]
               + [MemoryNeed(h, w, "encode", "scan") for h, w in scan])
    item = image[options.image_index:options.image_index + 1]
    return ProbePlan(options, item, [int(image.shape[1]), int(image.shape[2])], int(image.shape[0]), pixels, offset,
                     (height // vae.downscale, width // vae.downscale), scan)


def progress_units(plan: ProbePlan, channels: int) -> int:
    """Progress units of a planned probe: decoder-equivalent passes, plus one per resolution-scan encode."""
    options = plan.options
    cells = plan.latent_size[0] * plan.latent_size[1]
    passes = {"verify": options.verify_decodes, "map": map_passes_used(options.map_passes), "brute": 2 * channels * cells}
    return int(passes[options.mode]) + len(plan.scan)


# ---------------------------------------------------------------- the run

def probe(vae: ProbeVAE, image: torch.Tensor, options: ProbeOptions) -> ProbeResult:
    return run_probe(vae, plan_probe(vae, image, options))


def run_probe(vae: ProbeVAE, plan: ProbePlan) -> ProbeResult:
    options = plan.options
    started = time.perf_counter()
    counter = PassCounter(vae.tick)
    mean, logvar = encode(vae, plan.pixels)
    stats = cell_stats(mean, logvar)
    flags = find_flags(stats, options.threshold)
    influence, ratio, section = measure(vae, mean, stats, flags, options, counter)
    section = replace(section, passes=counter.passes, seconds=time.perf_counter() - started)
    report = ProbeReport(
        input_size=plan.input_size, probed_size=[int(s) for s in plan.pixels.shape[2:]], crop_offset=list(plan.offset),
        image_index=options.image_index, latent_shape=[int(s) for s in mean.shape[1:]], downscale=vae.downscale,
        vae_name=vae.name, has_logvar=logvar is not None, moments=moments_report(stats),
        flags=flags_report(stats, flags, vae.downscale, plan.offset), influence=section,
        resolutions=resolution_scan(vae, plan.image, plan.scan, options.threshold), notes=notes(vae, plan, logvar))
    return ProbeResult(report.as_dict(), mean, logvar, stats, flags, influence, ratio)


def encode(vae: ProbeVAE, pixels: torch.Tensor) -> tuple:
    mean, logvar = vae.encode_moments(pixels)
    check_moments(mean, logvar, pixels, vae.downscale, vae.name)
    return mean, logvar


def notes(vae: ProbeVAE, plan: ProbePlan, logvar) -> list:
    out = list(vae.notes)
    if logvar is None:
        out.append(f"{vae.name} has no log-variance output: flags use the mean magnitude only.")
    if plan.batch > 1:
        out.append(f"The IMAGE batch has {plan.batch} items; item {plan.options.image_index} was probed.")
    return out


def measure(vae: ProbeVAE, mean: torch.Tensor, stats: CellStats, flags: Flags, options: ProbeOptions,
            counter: PassCounter) -> tuple:
    """(influence [h, w], ratio [h, w], InfluenceReport) in the chosen mode."""
    cells = measured_cells(stats, flags)
    if options.mode == "verify":
        return measure_verify(vae, mean, cells, flags.mask, options, counter)
    estimator = None
    if options.mode == "brute":
        check_brute_size(*mean.shape[1:])
        influence = far_field_brute(vae.decode, mean, options.radius, vae.downscale, vae.max_batch, counter)
        budget = 2 * mean.shape[1] * mean.shape[2] * mean.shape[3]
    else:
        influence, estimator = far_field_map(vae.decode, mean, options.radius, vae.downscale, options.map_passes,
                                             options.seed, counter)
        budget = options.map_passes
    median = float(influence.nanmedian())
    ratio = influence / max(median, TINY_INFLUENCE)
    rows = [cell_influence(influence, ratio, y, x, flags.mask) for y, x in cells[:MAX_LISTED_CELLS]]
    return influence, ratio, InfluenceReport(options.mode, options.radius, budget, median, rows,
                                             top=top_cells(influence, ratio, flags.mask), estimator=estimator)


def cell_influence(influence, ratio, y: int, x: int, mask) -> dict:
    return {"y": y, "x": x, "flagged": bool(mask[y, x]), "influence": float(influence[y, x]),
            "ratio": round(float(ratio[y, x]), 3)}


def top_cells(influence, ratio, mask, count: int = TOP_CELLS) -> list:
    order = torch.argsort(torch.nan_to_num(influence, nan=-1.0).flatten(), descending=True)[:count]
    width = influence.shape[1]
    return [cell_influence(influence, ratio, int(i) // width, int(i) % width, mask) for i in order]


def measure_verify(vae: ProbeVAE, mean: torch.Tensor, cells: list, mask: torch.Tensor, options: ProbeOptions,
                   counter: PassCounter) -> tuple:
    excluded = mask.clone()
    for y, x in cells:
        excluded[y, x] = True
    result = far_field_verify(vae.decode, mean, cells, excluded, options.radius, vae.downscale,
                              options.verify_decodes, options.seed, counter, vae.max_batch)
    baseline = sample_baseline(result["samples"])
    influence = torch.full(tuple(mask.shape), float("nan"))
    for sample in result["samples"]:
        for y, x in sample["cells"]:
            influence[y, x] = sample["influence"]
    for cell in result["cells"]:
        influence[cell["y"], cell["x"]] = cell["influence"]
    rows = [{**cell, "flagged": bool(mask[cell["y"], cell["x"]]), "ratio": influence_ratio(cell["influence"], baseline)}
            for cell in result["cells"]]
    samples = [{**sample, "ratio": influence_ratio(sample["influence"], baseline)} for sample in result["samples"]]
    section = InfluenceReport("verify", options.radius, options.verify_decodes, baseline, rows, samples=samples,
                              unmeasured=result["unmeasured"])
    return influence, influence / max(baseline, TINY_INFLUENCE), section


# ---------------------------------------------------------------- resolution scan (encodes only)

def resized(image: torch.Tensor, shape: tuple) -> torch.Tensor:
    """IMAGE [1, H, W, 3] -> pixels [1, 3, height, width] (antialiased bilinear, clamped to 0..1)."""
    pixels = image.movedim(-1, 1).float()
    return F.interpolate(pixels, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def resolution_scan(vae: ProbeVAE, image: torch.Tensor, shapes: tuple, threshold: float) -> list:
    """Flags of the image encoded at each shape: where the anomalous cell sits as the resolution changes."""
    rows = []
    for height, width in shapes:
        mean, logvar = encode(vae, resized(image, (height, width)))
        if vae.tick is not None:  # one progress unit per encode (and a chance to cancel)
            vae.tick(1)
        stats = cell_stats(mean, logvar)
        listed = flags_report(stats, find_flags(stats, threshold), vae.downscale, listed=SCAN_LISTED_CELLS,
                              relative=True)
        rows.append(resolution_row(height, width, stats, listed))
    return rows
