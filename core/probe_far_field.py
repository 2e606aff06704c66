"""Far-field influence of latent cells on the decoded image: three estimators of one number.

Far-field influence of latent cell j:
    influence_j = sqrt( sum_{c, p outside W(j)} (d pixel_p / d z_{c,j})^2 / (C * n_far_j) )
the RMS change of a decoded pixel value (0..1 scale, before clamping) outside the window W(j) of
`radius` cells around j, per unit change of the cell (unit L2 norm over its C channels, averaged
over directions).

- brute: every cell exactly, by central differences (2 x C x cells decodes): the reference.
- map: every cell, from randomized vector-Jacobian products over far-field pixel bands, in a budget of passes.
- verify: chosen cells alone, against sampled groups of ordinary cells, in a few forward decodes.

Cost is counted in decoder-equivalent passes: one decode of one latent = 1; the forward pass that
keeps the autograd graph = 1; each backward pass (vector-Jacobian product) = BACKWARD_PASSES.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import require

BACKWARD_PASSES = 2.0  # conservative: measured 0.6-1.1 forward passes per backward on CPU for the SD decoder
FD_STEP = 5e-2         # verify's forward-difference step, relative to the latent's RMS
BRUTE_STEP = 1e-1      # brute force's central-difference step, relative to the latent's RMS
TINY_INFLUENCE = 1e-30  # keeps ratios finite for a decoder whose ordinary cells have no far field at all
BRUTE_MAX_PASSES = 8192  # 32x32 cells x 4 channels x 2
MIN_VERIFY_DECODES = 3   # one base, one candidate, one sample


class PassCounter:
    """Decoder-equivalent passes spent so far; each addition is also reported to `tick` (progress, cancel)."""

    def __init__(self, tick=None):
        self.passes = 0.0
        self.tick = tick

    def add(self, passes: float) -> None:
        self.passes += passes
        if self.tick is not None:
            self.tick(passes)


def check_decoded(pixels_out, latent: torch.Tensor, downscale: int, name: str) -> None:
    expected = (latent.shape[0], 3, latent.shape[2] * downscale, latent.shape[3] * downscale)
    require(isinstance(pixels_out, torch.Tensor) and tuple(pixels_out.shape) == expected,
            f"The {name} decoder returned {tuple(getattr(pixels_out, 'shape', ()))} for a latent "
            f"{tuple(latent.shape)}; expected {list(expected)}.",
            "The VAE does not match this latent: connect the VAE whose encoder made it.")


# ---------------------------------------------------------------- windows

def window_box(y: int, x: int, radius: int, height: int, width: int) -> tuple:
    return max(0, y - radius), min(height, y + radius + 1), max(0, x - radius), min(width, x + radius + 1)


def outside_windows(cells: list, radius: int, height: int, width: int) -> torch.Tensor:
    """[h, w] bool: cells outside the windows of all `cells` (y, x)."""
    far = torch.ones(height, width, dtype=torch.bool)
    for y, x in cells:
        y0, y1, x0, x1 = window_box(y, x, radius, height, width)
        far[y0:y1, x0:x1] = False
    return far


def far_cells(y: int, x: int, radius: int, height: int, width: int) -> torch.Tensor:
    """[h, w] bool: cells outside the window of (y, x)."""
    return outside_windows([(y, x)], radius, height, width)


def far_values(y: int, x: int, radius: int, height: int, width: int, downscale: int) -> float:
    """How many decoded values (3 colors per pixel) lie outside the window of (y, x)."""
    y0, y1, x0, x1 = window_box(y, x, radius, height, width)
    return 3.0 * downscale ** 2 * (height * width - (y1 - y0) * (x1 - x0))


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

def check_brute_size(channels: int, height: int, width: int) -> None:
    passes = 2 * channels * height * width
    require(passes <= BRUTE_MAX_PASSES, f"Brute force on a {height}x{width} latent with {channels} channels needs "
            f"{passes} decodes (limit {BRUTE_MAX_PASSES}).", "Use map mode, or a smaller image (256x256 px or less).")


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
    n_far = torch.tensor([[far_values(y, x, radius, height, width, downscale) for x in range(width)]
                          for y in range(height)], dtype=torch.float64)
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
    check_map_budget(budget)
    probes = map_probes(budget)
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


def check_map_budget(budget: float) -> None:
    require(map_probes(budget) >= 1, f"A map budget of {budget:g} passes leaves no backward pass (one costs "
            f"{BACKWARD_PASSES:g} passes after the 1-pass forward).", f"Set map_passes to at least {1 + BACKWARD_PASSES:g}.")


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


def check_verify_decodes(decodes: int) -> None:
    require(decodes >= MIN_VERIFY_DECODES, f"verify_decodes is {decodes}; verify needs at least {MIN_VERIFY_DECODES} "
            "(base, one candidate, one sample).", "Raise verify_decodes to 3 or more (8 is the default).")


def far_field_verify(decode, latent: torch.Tensor, candidates: list, excluded: torch.Tensor, radius: int,
                     downscale: int = 8, decodes: int = 8, seed: int = 0,
                     counter: Optional[PassCounter] = None, max_batch: int = 8) -> dict:
    """Influence of the candidate cells against groups of randomly sampled ordinary cells, in `decodes` decodes.

    Candidates are perturbed alone, along orthonormal directions. Each ordinary decode perturbs a group of
    cells spaced more than two windows apart, each along a random unit direction, and measures the change
    outside all their windows; the group's energy over its size estimates an ordinary cell's far field.
    """
    counter = counter or PassCounter()
    check_verify_decodes(decodes)
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
                pixel_region = to_pixels(outside_windows(cells, radius, height, width), downscale).to(change.device)
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
        values = far_values(y, x, radius, height, width, downscale)
        results.append({"y": y, "x": x, "directions": n, "influence": math.sqrt(total / n / values)})
    return {"cells": results, "samples": samples,
            "unmeasured": [list(c) for c, n in zip(candidates, directions) if n == 0]}


def sample_baseline(samples: list) -> float:
    """The median far-field influence over sampled groups of ordinary cells (the lower middle one, torch's
    median); NaN without samples."""
    return float(torch.tensor([s["influence"] for s in samples]).median()) if samples else float("nan")


def influence_ratio(influence, baseline: float):
    """influence over the baseline, rounded; a baseline of 0 (a decoder with no far field at all) is kept off zero,
    as map mode does."""
    return round(influence / max(baseline, TINY_INFLUENCE), 3)

