"""VAE anomaly-spot probe: outlier cells in the encoder's moments and their far-field influence on the decode.

The probe works on plain callables (see ProbeVAE), so synthetic VAEs test it without ComfyUI.

Far-field influence of latent cell j (all modes estimate the same number):
    influence_j = sqrt( sum_{c, p outside W(j)} (d pixel_p / d z_{c,j})^2 / (C * n_far_j) )
the RMS change of a decoded pixel value (0..1 scale, before clamping) outside the window W(j) of
`radius` cells around j, per unit change of the cell (unit L2 norm over its C channels, averaged
over directions). `ratio` divides by the median cell (map, brute) or by the median of the sampled
ordinary cells (verify).

Cost is counted in decoder-equivalent passes: one decode of one latent = 1; the forward pass that
keeps the autograd graph = 1; each backward pass (vector-Jacobian product) = BACKWARD_PASSES.
"""
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .errors import LatentLabInputError, require
from .validate import check_image

MODES = ("verify", "map", "brute")
BACKWARD_PASSES = 2.0  # conservative: measured 0.6-1.1 forward passes per backward on CPU for the SD decoder
FD_STEP = 5e-2         # verify's forward-difference step, relative to the latent's RMS
BRUTE_STEP = 1e-1      # brute force's central-difference step, relative to the latent's RMS
MAX_LISTED_CELLS = 32
TINY_INFLUENCE = 1e-30  # keeps ratios finite for a decoder whose ordinary cells have no far field at all
LOGVAR_SCALE_FLOOR = 0.25     # nats: at threshold 6 a flagged logvar is at least 1.5 below the median
MAGNITUDE_SCALE_FLOOR = 0.05  # of the median magnitude: at threshold 6, at least 30% above it
BRUTE_MAX_PASSES = 8192  # 32x32 cells x 4 channels x 2
REPORT_VERSION = 1
REPORT_KEYS = ("version", "verdict", "image", "latent", "vae", "moments", "flags", "influence", "sweep", "notes")


@dataclass
class ProbeVAE:
    """What the probe needs from a VAE, as plain callables.

    encode_moments(pixels [1, 3, H, W] in 0..1) -> (mean [1, C, H/d, W/d], logvar of the same shape or None),
        logvar read before any clamp.
    decode(latent [B, C, h, w]) -> pixels [B, 3, h*d, w*d] in 0..1, NOT clamped; differentiable for map mode.
    bytes_needed(height, width, mode) ("encode", "verify", "map", "brute") and room(bytes) -> free bytes after
        making room (unloading other models): an optional memory check.
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


@dataclass
class ProbeOptions:
    mode: str = "verify"
    threshold: float = 6.0
    radius: int = 3
    verify_decodes: int = 8
    map_passes: int = 24
    seed: int = 0
    sweep_sizes: tuple = ()
    image_index: int = 0


@dataclass
class ProbeResult:
    report: dict
    mean: torch.Tensor                # [1, C, h, w] raw latent
    logvar: Optional[torch.Tensor]
    stats: dict                       # cell maps [h, w]
    influence: torch.Tensor           # [h, w], NaN where not measured
    ratio: torch.Tensor               # [h, w], NaN where not measured
    flag_mask: torch.Tensor           # [h, w] bool


class PassCounter:
    def __init__(self, tick=None):
        self.passes = 0.0
        self.tick = tick

    def add(self, passes: float) -> None:
        self.passes += passes
        if self.tick is not None:
            self.tick(passes)


# ---------------------------------------------------------------- inputs and sizes

def min_latent_side(radius: int) -> int:
    """Every cell needs cells outside its window: 2 * radius + 2 cells per side."""
    return 2 * radius + 2


def prepare_pixels(image: torch.Tensor, index: int, downscale: int, radius: int) -> tuple:
    """IMAGE [B, H, W, 3] -> (pixels [1, 3, H', W'] center-cropped to a multiple of downscale, (top, left))."""
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


def check_fits(vae: ProbeVAE, height: int, width: int, mode: str) -> None:
    """Refuse a size whose probe would not fit in free memory; say which size would. Never tiles."""
    if vae.bytes_needed is None or vae.room is None:
        return
    needed = float(vae.bytes_needed(height, width, mode))
    free = float(vae.room(needed))
    if needed <= free:
        return
    scale = math.sqrt(free / needed) * 0.9
    step = 4 * vae.downscale
    fit_h, fit_w = (max(step, int(height * scale) // step * step), max(step, int(width * scale) // step * step))
    raise LatentLabInputError(
        f"A {width}x{height} px probe in {mode} mode needs about {needed / 2**30:.2f} GiB but only "
        f"{free / 2**30:.2f} GiB is free on {vae.where}; the probe never tiles (tiles make their own spots).",
        f"Resize the image to about {fit_w}x{fit_h} px or smaller (for example with 'Upscale Image'), "
        f"use verify mode, or free memory by unloading other models.")


def parse_sizes(text: str) -> tuple:
    """'256, 384 512' -> (256, 384, 512); each is the longer side in pixels."""
    if text is None or not str(text).strip():
        return ()
    sizes = []
    for part in str(text).replace(",", " ").split():
        require(part.isdigit() and int(part) > 0, f"Sweep size '{part}' is not a positive whole number of pixels.",
                "Write sizes as pixel lengths of the longer side, for example '256, 384, 512'.")
        sizes.append(int(part))
    require(len(sizes) <= 12, f"{len(sizes)} sweep sizes given; at most 12.", "Probe fewer sizes.")
    return tuple(sizes)


def check_moments(mean, logvar, pixels: torch.Tensor, downscale: int, name: str) -> None:
    expected = (pixels.shape[2] // downscale, pixels.shape[3] // downscale)
    require(isinstance(mean, torch.Tensor) and mean.ndim == 4 and mean.shape[0] == 1 and tuple(mean.shape[2:]) == expected,
            f"The {name} encoder returned {tuple(getattr(mean, 'shape', ()))} for a {pixels.shape[3]}x{pixels.shape[2]} px "
            f"image; expected [1, C, {expected[0]}, {expected[1]}] (one cell per {downscale}x{downscale} px).",
            "Connect a 2-D image VAE (SD1.x, SD2.x, SDXL, SD3, Flux): video and audio VAEs are not supported.")
    require(bool(torch.isfinite(mean).all()), f"The {name} encoder produced NaN or infinite values.",
            "Try a float32 VAE (an fp16 VAE overflow is a common cause).")
    if logvar is not None:
        require(logvar.shape == mean.shape, f"The {name} log-variance has shape {tuple(logvar.shape)} but the mean "
                f"{tuple(mean.shape)}.", "This VAE's encoder output is not a diagonal Gaussian; report it as a bug.")


def check_decoded(pixels_out, latent: torch.Tensor, downscale: int, name: str) -> None:
    expected = (latent.shape[0], 3, latent.shape[2] * downscale, latent.shape[3] * downscale)
    require(isinstance(pixels_out, torch.Tensor) and tuple(pixels_out.shape) == expected,
            f"The {name} decoder returned {tuple(getattr(pixels_out, 'shape', ()))} for a latent "
            f"{tuple(latent.shape)}; expected {list(expected)}.",
            "The VAE does not match this latent: connect the VAE whose encoder made it.")


# ---------------------------------------------------------------- robust statistics and flags

def robust_z(values: torch.Tensor, floor: float = 0.0) -> tuple:
    """(z, median, scale): z = (x - median) / scale, scale = max(1.4826 * MAD, floor).

    The floor keeps a nearly constant map (a flat image) from turning tiny differences into huge z.
    """
    flat = values.flatten().double()
    median = flat.median()
    scale = max(float(1.4826 * (flat - median).abs().median()), floor, 1e-6 * (1.0 + abs(float(median))))
    z = ((values.double() - median) / scale).float()
    return z, float(median), scale


def cell_stats(mean: torch.Tensor, logvar: Optional[torch.Tensor]) -> dict:
    """Per-cell maps [h, w]: channel-mean logvar and RMS magnitude of the mean, with robust z."""
    magnitude = mean[0].float().pow(2).mean(0).sqrt().cpu()
    z_mag, mag_median, mag_scale = robust_z(magnitude, MAGNITUDE_SCALE_FLOOR * float(magnitude.median()))
    stats = {"magnitude": magnitude, "magnitude_z": z_mag, "magnitude_median": mag_median, "magnitude_scale": mag_scale}
    if logvar is not None:
        channel_mean = logvar[0].float().mean(0).cpu()
        z_lv, lv_median, lv_scale = robust_z(channel_mean, LOGVAR_SCALE_FLOOR)
        stats.update(logvar=channel_mean, logvar_z=z_lv, logvar_median=lv_median, logvar_scale=lv_scale)
    return stats


def severity(stats: dict) -> torch.Tensor:
    """How far below (logvar) or above (magnitude) the typical cell, in robust z units."""
    score = stats["magnitude_z"].clone()
    if "logvar_z" in stats:
        score = torch.maximum(score, -stats["logvar_z"])
    return score


def flag_mask(stats: dict, threshold: float) -> torch.Tensor:
    return severity(stats) >= threshold


def cell_entry(stats: dict, y: int, x: int, downscale: int, offset: tuple, threshold: float) -> dict:
    top, left = offset
    entry = {
        "y": y, "x": x,
        "pixel_box": [top + y * downscale, left + x * downscale, top + (y + 1) * downscale, left + (x + 1) * downscale],
        "magnitude": round(float(stats["magnitude"][y, x]), 4),
        "magnitude_z": round(float(stats["magnitude_z"][y, x]), 2),
    }
    reasons = ["magnitude"] if float(stats["magnitude_z"][y, x]) >= threshold else []
    if "logvar" in stats:
        entry["logvar"] = round(float(stats["logvar"][y, x]), 3)
        entry["logvar_z"] = round(float(stats["logvar_z"][y, x]), 2)
        if float(stats["logvar_z"][y, x]) <= -threshold:
            reasons.insert(0, "logvar")
    entry["reasons"] = reasons
    return entry


def ranked_cells(mask: torch.Tensor, score: torch.Tensor) -> list:
    """(y, x) of the True cells, most severe first."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    order = torch.argsort(score[ys, xs], descending=True)
    return [(int(ys[i]), int(xs[i])) for i in order]


def find_flags(stats: dict, threshold: float, downscale: int, offset: tuple = (0, 0)) -> dict:
    score = severity(stats)
    cells = ranked_cells(score >= threshold, score)
    return {
        "threshold": threshold,
        "count": len(cells),
        "cells": [cell_entry(stats, y, x, downscale, offset, threshold) for y, x in cells[:MAX_LISTED_CELLS]],
    }


# ---------------------------------------------------------------- windows and far fields

def window_box(y: int, x: int, radius: int, height: int, width: int) -> tuple:
    return max(0, y - radius), min(height, y + radius + 1), max(0, x - radius), min(width, x + radius + 1)


def far_cells(y: int, x: int, radius: int, height: int, width: int) -> torch.Tensor:
    """[h, w] bool: cells outside the window of (y, x)."""
    far = torch.ones(height, width, dtype=torch.bool)
    y0, y1, x0, x1 = window_box(y, x, radius, height, width)
    far[y0:y1, x0:x1] = False
    return far


def to_pixels(cells: torch.Tensor, downscale: int) -> torch.Tensor:
    """[..., h, w] -> [..., h*d, w*d] by repeating each cell."""
    return cells.repeat_interleave(downscale, -2).repeat_interleave(downscale, -1)


def latent_scale(latent: torch.Tensor) -> float:
    return max(float(latent.float().pow(2).mean().sqrt()), 1e-3)


def decode_checked(decode, latents: torch.Tensor, downscale: int, counter: PassCounter, name: str = "VAE") -> torch.Tensor:
    """Decoded pixels in the decoder's own precision (at least float32): differences are taken before rounding."""
    out = decode(latents)
    check_decoded(out, latents, downscale, name)
    counter.add(latents.shape[0])
    return out if out.dtype == torch.float64 else out.float()


# ---------------------------------------------------------------- brute force (reference)

def far_field_brute(decode, latent: torch.Tensor, radius: int, downscale: int = 8, max_batch: int = 16,
                    counter: Optional[PassCounter] = None) -> torch.Tensor:
    """Exact far-field influence of every cell by central differences: 2*C*h*w decodes. Returns [h, w].

    Central differences allow a step large enough that float32 rounding of the decoded pixels does not
    drown the small far fields of ordinary cells, with an error of order step^2.
    """
    counter = counter or PassCounter()
    latent = latent.detach().float()
    _, channels, height, width = latent.shape
    step = BRUTE_STEP * latent_scale(latent)
    jobs = [(y, x, c, sign) for y in range(height) for x in range(width) for c in range(channels) for sign in (1, -1)]
    energy = torch.zeros(height, width, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(jobs), 2 * max(1, max_batch // 2)):
            chunk = jobs[start:start + 2 * max(1, max_batch // 2)]
            batch = latent.repeat(len(chunk), 1, 1, 1)
            for i, (y, x, c, sign) in enumerate(chunk):
                batch[i, c, y, x] += sign * step
            out = decode_checked(decode, batch, downscale, counter)
            energies = (out[0::2] - out[1::2]).double().pow(2).sum(1) / 4
            for i, (y, x, _, _) in enumerate(chunk[0::2]):
                box = window_box(y, x, radius, height, width)
                energy[y, x] += float(_far_sum(energies[i], box, downscale))
    n_far = torch.tensor([[3 * downscale ** 2 * float(far_cells(y, x, radius, height, width).sum())
                           for x in range(width)] for y in range(height)], dtype=torch.float64)
    return (energy / (step ** 2 * channels * n_far)).sqrt().float()


def _far_sum(field: torch.Tensor, box: tuple, downscale: int) -> torch.Tensor:
    """Sum of a pixel field outside a window box, without cancelling a large near field against it."""
    y0, y1, x0, x1 = (v * downscale for v in box)
    total = field[:y0].sum() + field[y1:].sum()
    return total + field[y0:y1, :x0].sum() + field[y0:y1, x1:].sum()


# ---------------------------------------------------------------- map mode: randomized VJPs over far-field bands

def band_usable(orientation: str, start: int, length: int, radius: int, height: int, width: int) -> torch.Tensor:
    """[h, w] bool: cells whose window avoids the band, so the whole band is in their far field."""
    size = height if orientation == "rows" else width
    index = torch.arange(size)
    ok = (index < start - radius) | (index > start + length - 1 + radius)
    return ok[:, None].expand(height, width) if orientation == "rows" else ok[None, :].expand(height, width)


def band_plan(count: int, radius: int, height: int, width: int, generator: torch.Generator) -> list:
    """Greedy choice of `count` (band, color) probes: each covers the cells, and per cell the colors, with the
    fewest usable probes so far. Returns [(orientation, start, length, color, usable [h, w])]."""
    length = 2 if min(height, width) >= 2 * radius + 4 else 1  # every cell keeps a band that fits beside its window
    candidates = [(o, s) for o, size in (("rows", height), ("cols", width)) for s in range(0, size - length + 1)]
    masks = torch.stack([band_usable(o, s, length, radius, height, width) for o, s in candidates]).double()
    covered = torch.zeros(3, height, width, dtype=torch.float64)
    used = torch.zeros(len(candidates), dtype=torch.float64)
    plan = []
    for _ in range(count):
        cells = covered.sum(0)
        weight = 1.0 / (1.0 + cells) ** 2 + 0.25 / (1.0 + covered) ** 2  # [3, h, w]: cells first, then colors
        scores = torch.einsum("nhw,chw->nc", masks, weight) / (1.0 + used)[:, None]
        scores = scores * (1.0 + 0.05 * torch.rand(scores.shape, generator=generator, dtype=torch.float64))
        best, color = divmod(int(torch.argmax(scores)), 3)
        used[best] += 1
        covered[color] += masks[best]
        plan.append((*candidates[best], length, color, masks[best].bool()))
    return plan


def band_pixels(orientation: str, start: int, length: int, height: int, width: int, downscale: int) -> torch.Tensor:
    mask = torch.zeros(height * downscale, width * downscale, dtype=torch.bool)
    lo, hi = start * downscale, (start + length) * downscale
    if orientation == "rows":
        mask[lo:hi] = True
    else:
        mask[:, lo:hi] = True
    return mask




def band_probe(pixels: torch.Tensor, color: int, generator: torch.Generator) -> torch.Tensor:
    """Random signs on the band's pixels [1, 3, H, W], with each color's sum over the band set by design.

    With plain Rademacher signs, a far field that is uniform over the band (a global color shift) is
    measured through the random sum of the signs, a chi-square(1) factor. Here each color's signs are
    centred and the probe's sums are sqrt(3 n) on one color (random sign) and 0 on the others: averaged over
    the three colors, the uniform part is measured exactly; the rest stays an unbiased estimate.
    """
    signs = (torch.randint(0, 2, (1, 3, *pixels.shape), generator=generator).float() * 2 - 1) * pixels
    count = float(pixels.sum())
    signs = signs - signs.sum((2, 3), keepdim=True) / count * pixels
    target = torch.zeros(1, 3, 1, 1)
    target[0, color] = math.sqrt(3 * count) * (1.0 if torch.rand(1, generator=generator) < 0.5 else -1.0)
    return signs + target / count * pixels


def far_field_map(decode, latent: torch.Tensor, radius: int, downscale: int = 8, budget: float = 24,
                  seed: int = 0, counter: Optional[PassCounter] = None) -> tuple:
    """Estimate every cell's far-field influence with randomized VJPs over far-field pixel bands.

    One forward pass keeps the graph; each backward pass gets Rademacher signs on one band of pixels.
    For cell j, only bands outside its window count; its squared gradient, summed over channels, is an
    unbiased estimate of its far-field energy on that band. Returns (influence [h, w], info dict).
    """
    counter = counter or PassCounter()
    latent = latent.detach().float()
    _, channels, height, width = latent.shape
    probes = map_probes(budget)
    require(probes >= 1, f"A map budget of {budget:g} passes leaves no backward pass (one costs {BACKWARD_PASSES:g} "
            "passes after the 1-pass forward).", f"Set map_passes to at least {1 + BACKWARD_PASSES:g}.")
    generator = torch.Generator().manual_seed(seed)
    plan = band_plan(probes, radius, height, width, generator)
    energy, values = [], []
    with torch.inference_mode(False), torch.enable_grad():
        z = latent.clone().requires_grad_(True)
        out = decode(z)
        check_decoded(out, z, downscale, "VAE")
        require(out.requires_grad, "The VAE's decoder is not differentiable, so map mode cannot run.",
                "Use verify or brute mode with this VAE.")
        counter.add(1)
        for k, (orientation, start, length, color, _) in enumerate(plan):
            pixels = band_pixels(orientation, start, length, height, width, downscale)
            probe = band_probe(pixels, color, generator).to(device=out.device, dtype=out.dtype)
            grad, = torch.autograd.grad(out, z, probe, retain_graph=k < len(plan) - 1)
            energy.append(grad[0].double().pow(2).sum(0).cpu())
            values.append(3.0 * float(pixels.sum()))
            counter.add(BACKWARD_PASSES)
        del out, z
    usable = torch.stack([m for *_, m in plan]).double()
    energy, values = torch.stack(energy), torch.tensor(values, dtype=torch.float64)
    influence = common_mode_estimate(energy, values, usable, torch.tensor([p[3] for p in plan]), channels)
    per_cell = usable.sum(0)
    info = {"backward_passes": len(plan), "bands": [[o, s, n, "RGB"[c]] for o, s, n, c, _ in plan],
            "bands_per_cell": {"min": int(per_cell.min()), "median": float(per_cell.median())}}
    return influence, info


def map_probes(budget: float) -> int:
    """Backward passes a map budget affords after its one forward pass."""
    return int((budget - 1) // BACKWARD_PASSES)


def map_passes_used(budget: float) -> float:
    return 1 + BACKWARD_PASSES * map_probes(budget)


def rank_one_fit(density: torch.Tensor, usable: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """Fit log density[k, cell] ~ log probe[k] + log amount[cell] over usable pairs; returns amount (relative).

    Exact when every cell's far field has the same shape, so that a probe's random draw scales all cells
    alike; otherwise a least-squares compromise in log space, where one huge cell cannot dominate the fit.
    """
    logs = torch.log(density.clamp(min=1e-300))
    weight = usable / usable.sum(0).clamp(min=1)
    cells = (weight * logs).sum(0)
    for _ in range(steps):
        probes = (usable * (logs - cells)).sum((1, 2), keepdim=True) / usable.sum((1, 2), keepdim=True).clamp(min=1)
        cells = (weight * (logs - probes)).sum(0)
    return torch.exp(cells - cells.max())


def common_mode_estimate(energy: torch.Tensor, values: torch.Tensor, usable: torch.Tensor, colors: torch.Tensor,
                         channels: int) -> torch.Tensor:
    """Per-cell influence from band energies [K, h, w] of probes whose sums sit on `colors` [K] (see band_probe).

    Per color: a far field shared by many cells makes every cell's energy carry the same random factor of
    the probe's draw, which a rank-1 fit (probe x cell) removes; its level is set by the plain per-pixel
    mean over the cell's usable probes (median over cells). Colors are then averaged, so a cell whose usable
    probes favour one color is not biased towards it.
    """
    density = energy / values[:, None, None]
    total = torch.zeros_like(density[0])
    strata = torch.zeros_like(density[0])
    for color in range(3):
        rows = colors == color
        if not rows.any():
            continue
        picked, mask = density[rows], usable[rows]
        count = mask.sum(0)
        has = count > 0
        if not has.any():
            continue
        plain = (picked * mask).sum(0) / count.clamp(min=1)
        fitted = rank_one_fit(picked, mask)
        level = plain[has].median() / fitted[has].median().clamp(min=1e-300)
        total += torch.where(has, fitted * level, 0.0)
        strata += has.double()
    covered = strata > 0
    result = (total / strata.clamp(min=1) / channels).sqrt().float()
    result[~covered] = float("nan")
    return result


# ---------------------------------------------------------------- verify mode: at most N forward decodes

def spaced_sample(pool: list, spacing: int, limit: int, generator: torch.Generator) -> list:
    """Up to `limit` cells of `pool`, pairwise Chebyshev distance > spacing, in random order."""
    order = torch.randperm(len(pool), generator=generator).tolist()
    chosen = []
    for i in order:
        y, x = pool[i]
        if all(max(abs(y - cy), abs(x - cx)) > spacing for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == limit:
                break
    return chosen


def direction_plan(candidates: list, slots: int, channels: int) -> list:
    """How many orthogonal directions each candidate gets: at least 1 each for as many as fit, then up to C."""
    counts = [0] * len(candidates)
    for round_ in range(channels):
        for i in range(len(candidates)):
            if slots == 0:
                return counts
            if counts[i] == round_:
                counts[i] += 1
                slots -= 1
    return counts


def unit_directions(count: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
    return q[:, :count].T.float()


def far_field_verify(decode, latent: torch.Tensor, candidates: list, excluded: torch.Tensor, radius: int,
                     downscale: int = 8, decodes: int = 8, seed: int = 0,
                     counter: Optional[PassCounter] = None, max_batch: int = 8) -> dict:
    """Influence of the candidate cells against groups of randomly sampled ordinary cells, in `decodes` decodes.

    Candidates are perturbed alone, along orthonormal directions. Each ordinary decode perturbs a group of
    cells spaced more than two windows apart, each along a random unit direction, and measures the change
    outside all their windows; the group's energy over its size estimates an ordinary cell's far field.
    """
    counter = counter or PassCounter()
    require(decodes >= 3, f"verify_decodes is {decodes}; verify needs at least 3 (base, one candidate, one sample).",
            "Raise verify_decodes to 3 or more (8 is the default).")
    latent = latent.detach().float()
    _, channels, height, width = latent.shape
    generator = torch.Generator().manual_seed(seed)
    step = FD_STEP * latent_scale(latent)
    groups_wanted = max(1, min(3, (decodes - 1) // 3))
    directions = direction_plan(candidates, decodes - 1 - groups_wanted, channels)
    measured = [(cell, n) for cell, n in zip(candidates, directions) if n > 0]
    group_count = decodes - 1 - sum(n for _, n in measured)
    pool = [(y, x) for y in range(height) for x in range(width) if not excluded[y, x]]
    size = max(1, int(0.35 * height * width / (2 * radius + 1) ** 2))
    groups = [g for g in (spaced_sample(pool, 2 * radius + 1, size, generator) for _ in range(group_count)) if g]
    jobs = []
    for (y, x), count in measured:
        for direction in unit_directions(count, channels, generator):
            jobs.append(([(y, x)], direction[None], (y, x)))
    for group in groups:
        vectors = F.normalize(torch.randn(len(group), channels, generator=generator), dim=1)
        jobs.append((group, vectors, None))
    with torch.no_grad():
        base = decode_checked(decode, latent, downscale, counter)
        sums = {}
        samples = []
        for start in range(0, len(jobs), max_batch):
            chunk = jobs[start:start + max_batch]
            batch = latent.repeat(len(chunk), 1, 1, 1)
            for i, (cells, vectors, _) in enumerate(chunk):
                for (y, x), v in zip(cells, vectors):
                    batch[i, :, y, x] += step * v.to(batch.device)
            change = (decode_checked(decode, batch, downscale, counter) - base).double().pow(2).sum(1)
            for i, (cells, _, key) in enumerate(chunk):
                region = torch.ones(height, width, dtype=torch.bool)
                for y, x in cells:
                    y0, y1, x0, x1 = window_box(y, x, radius, height, width)
                    region[y0:y1, x0:x1] = False
                pixel_region = to_pixels(region, downscale).to(change.device)
                energy = float(change[i].double()[pixel_region].sum()) / step ** 2
                values = 3.0 * float(pixel_region.sum())
                if key is not None:
                    total, n = sums.get(key, (0.0, 0))
                    sums[key] = (total + energy, n + 1)
                else:
                    samples.append({"cells": [list(c) for c in cells],
                                    "influence": math.sqrt(energy / (len(cells) * values))})
    results = []
    for (y, x), count in measured:
        total, n = sums[(y, x)]
        values = 3.0 * downscale ** 2 * float(far_cells(y, x, radius, height, width).sum())
        results.append({"y": y, "x": x, "directions": n, "influence": math.sqrt(total / n / values)})
    return {"cells": results, "samples": samples,
            "unmeasured": [list(c) for c, n in zip(candidates, directions) if n == 0]}


# ---------------------------------------------------------------- the probe

def probe(vae: ProbeVAE, image: torch.Tensor, options: ProbeOptions) -> ProbeResult:
    require(options.mode in MODES, f"Unknown mode '{options.mode}'.", f"Use one of: {', '.join(MODES)}.")
    require(1 <= options.radius <= 64, f"radius {options.radius} is out of range.", "Use 1 to 64 cells (3 is typical).")
    started = time.perf_counter()
    counter = PassCounter(vae.tick)
    pixels, offset = prepare_pixels(image, options.image_index, vae.downscale, options.radius)
    height, width = pixels.shape[2:]
    check_fits(vae, height, width, "encode")
    check_fits(vae, height, width, options.mode)
    mean, logvar = vae.encode_moments(pixels)
    check_moments(mean, logvar, pixels, vae.downscale, vae.name)
    stats = cell_stats(mean, logvar)
    flags = find_flags(stats, options.threshold, vae.downscale, offset)
    mask = flag_mask(stats, options.threshold)
    influence, ratio, section = measure_influence(vae, mean, stats, mask, options, counter)
    section["decoder_equivalent_passes"] = round(counter.passes, 2)
    section["wall_seconds"] = round(time.perf_counter() - started, 3)
    notes = list(vae.notes)
    if logvar is None:
        notes.append(f"{vae.name} has no log-variance output: flags use the mean magnitude only.")
    if image.shape[0] > 1:
        notes.append(f"The IMAGE batch has {image.shape[0]} items; item {options.image_index} was probed.")
    report = {
        "version": REPORT_VERSION,
        "image": {"input_size": [int(image.shape[1]), int(image.shape[2])], "probed_size": [int(height), int(width)],
                  "crop_offset": list(offset), "image_index": options.image_index},
        "latent": {"shape": [int(s) for s in mean.shape[1:]], "downscale": vae.downscale},
        "vae": {"name": vae.name, "has_logvar": logvar is not None},
        "moments": moment_summary(stats, logvar is not None),
        "flags": flags,
        "influence": section,
        "sweep": sweep(vae, image[options.image_index:options.image_index + 1], options) if options.sweep_sizes else [],
        "notes": notes,
    }
    report["verdict"] = verdict(report)
    return ProbeResult(report, mean, logvar, stats, influence, ratio, mask)


def candidates_of(stats: dict, mask: torch.Tensor) -> list:
    """Flagged cells, most severe first; with none flagged, the single most extreme cell."""
    score = severity(stats)
    cells = ranked_cells(mask, score)
    if not cells:
        index = int(torch.argmax(score))
        cells = [divmod(index, score.shape[1])]
    return cells


def measure_influence(vae: ProbeVAE, mean: torch.Tensor, stats: dict, mask: torch.Tensor, options: ProbeOptions,
                      counter: PassCounter) -> tuple:
    height, width = mask.shape
    section = {"mode": options.mode, "radius": options.radius,
               "units": "RMS change of a far-field pixel value (0..1) per unit latent change of the cell",
               "backward_pass_cost": BACKWARD_PASSES}
    if options.mode == "verify":
        return verify_section(vae, mean, stats, mask, options, counter, section)
    if options.mode == "brute":
        passes = 2 * mean.shape[1] * height * width
        require(passes <= BRUTE_MAX_PASSES, f"Brute force on a {height}x{width} latent needs {passes} decodes "
                f"(limit {BRUTE_MAX_PASSES}).", "Use map mode, or a smaller image (256x256 px or less).")
        influence = far_field_brute(vae.decode, mean, options.radius, vae.downscale, vae.max_batch, counter)
        section["budget"] = passes
    else:
        influence, info = far_field_map(vae.decode, mean, options.radius, vae.downscale, options.map_passes,
                                        options.seed, counter)
        section.update(budget=options.map_passes, estimator=info)
    median = float(influence.nanmedian())
    ratio = influence / max(median, TINY_INFLUENCE)
    section["median"] = median
    section["top"] = top_cells(influence, ratio, mask)
    section["cells"] = [cell_influence(influence, ratio, y, x, bool(mask[y, x]))
                        for y, x in candidates_of(stats, mask)[:MAX_LISTED_CELLS]]
    return influence, ratio, section


def cell_influence(influence, ratio, y, x, flagged) -> dict:
    return {"y": y, "x": x, "flagged": flagged, "influence": float(influence[y, x]), "ratio": round(float(ratio[y, x]), 3)}


def top_cells(influence, ratio, mask, count: int = 8) -> list:
    order = torch.argsort(torch.nan_to_num(influence, nan=-1.0).flatten(), descending=True)[:count]
    width = influence.shape[1]
    return [cell_influence(influence, ratio, int(i) // width, int(i) % width, bool(mask.flatten()[i])) for i in order]


def sample_baseline(samples: list) -> float:
    """The median far-field influence over sampled groups of ordinary cells (the lower middle one, torch's
    median); NaN without samples."""
    return float(torch.tensor([s["influence"] for s in samples]).median()) if samples else float("nan")


def influence_ratio(influence, baseline: float):
    """influence over the baseline, rounded; a baseline of 0 (a decoder with no far field at all) is kept off zero,
    as map mode does."""
    return round(influence / max(baseline, TINY_INFLUENCE), 3)


def verify_section(vae, mean, stats, mask, options, counter, section) -> tuple:
    height, width = mask.shape
    candidates = candidates_of(stats, mask)
    excluded = mask.clone()
    for y, x in candidates:
        excluded[y, x] = True
    result = far_field_verify(vae.decode, mean, candidates, excluded, options.radius, vae.downscale,
                              options.verify_decodes, options.seed, counter, vae.max_batch)
    baseline = sample_baseline(result["samples"])
    influence = torch.full((height, width), float("nan"))
    for sample in result["samples"]:
        for y, x in sample["cells"]:
            influence[y, x] = sample["influence"]
        sample["ratio"] = influence_ratio(sample["influence"], baseline)
    cells = []
    for cell in result["cells"]:
        influence[cell["y"], cell["x"]] = cell["influence"]
        cells.append({**cell, "flagged": bool(mask[cell["y"], cell["x"]]),
                      "ratio": influence_ratio(cell["influence"], baseline)})
    section.update(budget=options.verify_decodes, median=baseline, cells=cells, samples=result["samples"],
                   unmeasured=result["unmeasured"],
                   baseline="median over sampled groups of ordinary cells (each group: mean far-field energy per cell)")
    return influence, influence / max(baseline, TINY_INFLUENCE), section


def moment_summary(stats: dict, has_logvar: bool) -> dict:
    summary = {
        "logvar_read": "before the clamp to [-30, 20]" if has_logvar else None,
        "magnitude": summarize(stats["magnitude"], stats["magnitude_median"], stats["magnitude_scale"]),
    }
    if has_logvar:
        summary["logvar_channel_mean"] = summarize(stats["logvar"], stats["logvar_median"], stats["logvar_scale"])
    return summary


def summarize(values, median, scale) -> dict:
    return {"min": round(float(values.min()), 4), "median": round(median, 4), "max": round(float(values.max()), 4),
            "robust_scale": round(scale, 5)}


# ---------------------------------------------------------------- resolution sweep

def resized(image: torch.Tensor, longer: int, downscale: int) -> torch.Tensor:
    """IMAGE [1, H, W, 3] -> pixels [1, 3, H', W'], longer side `longer`, both sides multiples of downscale."""
    _, height, width, _ = image.shape
    factor = longer / max(height, width)
    new_h = max(downscale, round(height * factor) // downscale * downscale)
    new_w = max(downscale, round(width * factor) // downscale * downscale)
    pixels = image.movedim(-1, 1).float()
    return F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def sweep(vae: ProbeVAE, image: torch.Tensor, options: ProbeOptions) -> list:
    rows = []
    for size in options.sweep_sizes:
        require(size >= 4 * vae.downscale, f"Sweep size {size} px is too small.",
                f"Use sizes of at least {4 * vae.downscale} px.")
        pixels = resized(image, size, vae.downscale)
        check_fits(vae, pixels.shape[2], pixels.shape[3], "encode")
        mean, logvar = vae.encode_moments(pixels)
        if vae.tick is not None:  # one progress unit per encode (and a chance to cancel)
            vae.tick(1)
        check_moments(mean, logvar, pixels, vae.downscale, vae.name)
        stats = cell_stats(mean, logvar)
        flags = find_flags(stats, options.threshold, vae.downscale)
        for cell in flags["cells"]:
            cell["relative_position"] = [round((cell["y"] + 0.5) / mean.shape[2], 4), round((cell["x"] + 0.5) / mean.shape[3], 4)]
        row = {"size": [int(pixels.shape[2]), int(pixels.shape[3])], "latent": [int(mean.shape[2]), int(mean.shape[3])],
               "flag_count": flags["count"], "cells": flags["cells"][:8],
               "max_magnitude_z": round(float(stats["magnitude_z"].max()), 2)}
        if "logvar_z" in stats:
            row["min_logvar"] = round(float(stats["logvar"].min()), 3)
            row["min_logvar_z"] = round(float(stats["logvar_z"].min()), 2)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- verdict

def ratio_text(ratio) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "not measured"
    return f"{ratio:.3g}x median" if ratio < 1000 else f"{ratio:.2e}x median"


def verdict(report: dict) -> str:
    flags, influence = report["flags"], report["influence"]
    by_cell = {(c["y"], c["x"]): c.get("ratio") for c in influence.get("cells", [])}
    if flags["count"] == 0:
        cell = influence["cells"][0] if influence.get("cells") else None
        where = f"; most extreme cell ({cell['y']}, {cell['x']}) far-field influence {ratio_text(cell['ratio'])}" if cell else ""
        return f"No anomalous cells (robust |z| < {flags['threshold']:g}){where}."
    first = flags["cells"][0]
    parts = []
    if "logvar" in first:
        parts.append(f"logvar {first['logvar']:.1f} (robust z {first['logvar_z']:+.1f})")
    parts.append(f"magnitude z {first['magnitude_z']:+.1f}")
    parts.append(f"far-field influence {ratio_text(by_cell.get((first['y'], first['x'])))}")
    noun = "cell" if flags["count"] == 1 else "cells"
    lead = f"{flags['count']} anomalous {noun}" + ("" if flags["count"] == 1 else ", worst")
    return f"{lead} at ({first['y']}, {first['x']}): " + ", ".join(parts) + "."
