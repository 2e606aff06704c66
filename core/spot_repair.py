"""Latent spot repair: replace chosen cells by an interpolation of their unchosen neighbours, per channel."""
import json
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from .errors import LatentLabInputError, require
from .probe_far_field import PassCounter, far_field_verify, influence_ratio, sample_baseline
from .validate import excerpt

METHODS = ("harmonic", "inverse_distance")
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


MAX_REPORT_CHARS = 32 * 1024 * 1024  # a map-mode report of a large latent lists every cell's influence
REPORT_FIX = "Connect the probe's 'report' output unchanged, from a probe of the image this latent came from."


def cells_from_mask(mask: torch.Tensor, height: int, width: int, downscale: int = 8) -> torch.Tensor:
    """MASK [B, H, W] or [H, W] at latent or pixel (x downscale) size -> [B, h, w] bool (any masked pixel in a cell)."""
    require(isinstance(mask, torch.Tensor), f"MASK must be a tensor, got {type(mask).__name__}.", "Connect a MASK output.")
    require(not mask.is_complex(), f"MASK must hold real numbers, got {mask.dtype}.", "Connect a MASK output.")
    mask = mask[None] if mask.ndim == 2 else mask
    require(mask.ndim == 3, f"MASK must be [batch, height, width]; got shape {tuple(mask.shape)}.")
    require(mask.shape[0] >= 1, f"MASK is empty: shape {tuple(mask.shape)}.", "Connect a mask with at least one item.")
    require(bool(torch.isfinite(mask).all()), "MASK contains NaN or infinite values.", "Fix the node that made it.")
    size = tuple(mask.shape[1:])
    if size == (height, width):
        return mask > 0.5
    require(size == (height * downscale, width * downscale),
            f"The MASK is {size[1]}x{size[0]} but the latent is {width}x{height} cells "
            f"({width * downscale}x{height * downscale} px).",
            "Use the flag_mask of a VAE Anomaly Probe run on the image this latent came from, "
            "or a mask of the latent's size or pixel size.")
    return F.max_pool2d(mask[:, None].float(), downscale)[:, 0] > 0.5


def cells_from_report(text: str, height: int, width: int) -> torch.Tensor:
    """The flagged cells of a VAE Anomaly Probe report (JSON) -> [1, h, w] bool. The report is checked against
    the probe's schema and this latent's size first: it may have been edited by hand or come from another image."""
    report = _report_json(text)
    latent, flags = report.get("latent"), report.get("flags")
    require(isinstance(latent, dict) and isinstance(flags, dict),
            "The report is not a VAE Anomaly Probe report (no 'latent' and 'flags' sections).", REPORT_FIX)
    shape = latent.get("shape")
    require(isinstance(shape, list) and len(shape) == 3 and all(_whole(n) and n >= 1 for n in shape),
            f"The report's latent shape is {excerpt(shape)}; a probe report gives [channels, height, width].",
            REPORT_FIX)
    require(tuple(shape[1:]) == (height, width),
            f"The report was made on a {shape[2]}x{shape[1]}-cell latent but this latent is {width}x{height}.",
            "Probe the same image at the size this latent was encoded at.")
    listed, count = flags.get("cells"), flags.get("count")
    require(isinstance(listed, list) and len(listed) <= height * width,
            f"The report's flagged cells are {excerpt(listed)}; a probe report lists at most one entry per cell.",
            REPORT_FIX)
    require(count is None or (_whole(count) and count >= 0),
            f"The report's flag count is {excerpt(count)}, not a whole number.", REPORT_FIX)
    cells = [_report_cell(entry, number, height, width) for number, entry in enumerate(listed, start=1)]
    require(count is None or count <= len(cells),
            f"The report lists {len(cells)} of {count} flagged cells.",
            "Connect the probe's flag_mask instead: it holds them all.")
    grid = torch.zeros(1, height, width, dtype=torch.bool)
    for y, x in cells:
        grid[0, y, x] = True
    return grid


def _report_json(text) -> dict:
    require(isinstance(text, str), f"The report is {type(text).__name__}, not text.", REPORT_FIX)
    require(len(text) <= MAX_REPORT_CHARS, f"The report is {len(text):,} characters long; a probe report is at "
            f"most {MAX_REPORT_CHARS:,}.", REPORT_FIX)
    try:
        report = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than Python's stack
        reason = "nested too deeply" if isinstance(error, RecursionError) else excerpt(str(error), 80)
        raise LatentLabInputError(f"The report is not a VAE Anomaly Probe report (not JSON: {reason}).",
                                  REPORT_FIX) from None
    require(isinstance(report, dict), "The report is not a VAE Anomaly Probe report (not a JSON object).", REPORT_FIX)
    return report


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _report_cell(entry, number: int, height: int, width: int) -> tuple:
    y, x = (entry.get("y"), entry.get("x")) if isinstance(entry, dict) else (None, None)
    require(_whole(y) and _whole(x),
            f"Flagged cell {number} of the report has no whole-number 'y' and 'x' ({excerpt(entry)}).", REPORT_FIX)
    # Python would read a negative index from the far end: cell -1 would repair the last row, silently.
    require(0 <= y < height and 0 <= x < width,
            f"Flagged cell {number} of the report is at y={excerpt(y)}, x={excerpt(x)}, outside this "
            f"{width}x{height}-cell latent (y 0..{height - 1}, x 0..{width - 1}).", REPORT_FIX)
    return int(y), int(x)


def harmonic_fill(grid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[C, h, w], mask [h, w] -> masked cells solve Laplace's equation with the unmasked cells as boundary."""
    from scipy.sparse import coo_matrix  # here, not at import: scipy.sparse adds 0.2 s to ComfyUI's start-up
    from scipy.sparse.linalg import spsolve
    height, width = mask.shape
    unknown = mask.flatten().nonzero().flatten().tolist()
    index = {cell: i for i, cell in enumerate(unknown)}
    values = grid.double().flatten(1).cpu().numpy()
    rows, cols, data = [], [], []
    rhs = np.zeros((len(unknown), grid.shape[0]))
    for i, cell in enumerate(unknown):
        y, x = divmod(cell, width)
        degree = 0
        for dy, dx in NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width:
                degree += 1
                other = ny * width + nx
                if other in index:
                    rows.append(i), cols.append(index[other]), data.append(-1.0)
                else:
                    rhs[i] += values[:, other]
        rows.append(i), cols.append(i), data.append(float(degree))
    matrix = coo_matrix((data, (rows, cols)), shape=(len(unknown), len(unknown))).tocsc()
    solved = spsolve(matrix, rhs)
    solved = solved.reshape(len(unknown), -1)
    out = grid.clone().flatten(1)
    out[:, unknown] = torch.from_numpy(solved.T.copy()).to(out.dtype).to(out.device)
    return out.view_as(grid)


def inverse_distance_fill(grid: torch.Tensor, mask: torch.Tensor, power: float = 2.0, reach: int = 3) -> torch.Tensor:
    """Masked cells -> weighted mean of unmasked cells within `reach` cells (widened until one is found), 1/d^power."""
    height, width = mask.shape
    out = grid.clone()
    for y, x in mask.nonzero().tolist():
        radius = reach
        while True:
            y0, y1, x0, x1 = max(0, y - radius), min(height, y + radius + 1), max(0, x - radius), min(width, x + radius + 1)
            known = ~mask[y0:y1, x0:x1]
            if known.any() or radius > max(height, width):
                break
            radius *= 2
        ys, xs = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
        distance = ((ys - y) ** 2 + (xs - x) ** 2).double().sqrt()
        weight = torch.where(known, distance.clamp(min=1e-9) ** -power, torch.zeros_like(distance)).to(grid.device)
        patch = grid[:, y0:y1, x0:x1].double()
        out[:, y, x] = ((patch * weight).sum((1, 2)) / weight.sum()).to(out.dtype)
    return out


def repair(samples: torch.Tensor, cells: torch.Tensor, method: str = "harmonic") -> torch.Tensor:
    """samples [B, C, h, w], cells [B or 1, h, w] bool -> a new tensor with the cells filled."""
    require(method in METHODS, f"Unknown method '{method}'.", f"Use one of: {', '.join(METHODS)}.")
    batch = samples.shape[0]
    require(cells.shape[0] in (1, batch), f"The mask has {cells.shape[0]} items but the latent batch has {batch}.",
            "Use one mask for all items or one per item.")
    require(bool(cells.any()), "No cell is marked for repair: the mask (or the report's flag list) is empty.",
            "Nothing to do: the probe found no anomalous cell. Leave this node out, or lower the probe's threshold.")
    out = samples.clone()
    fill = harmonic_fill if method == "harmonic" else inverse_distance_fill
    for b in range(batch):
        mask = cells[b if cells.shape[0] == batch else 0].to(torch.bool).cpu()
        if not mask.any():
            continue
        require(not bool(mask.all()), "Every cell of the latent is marked for repair: there is nothing to interpolate from.",
                "Mark only the anomalous cells (the probe's flag_mask).")
        out[b] = fill(samples[b], mask)
    return out


def reprobe(decode, before: torch.Tensor, after: torch.Tensor, cells: torch.Tensor, radius: int, downscale: int = 8,
            decodes: int = 8, seed: int = 0, counter=None) -> dict:
    """Far-field influence of the repaired cells (batch item 0) before and after, each against ordinary cells."""
    check_reprobe_radius(radius, *before.shape[2:])
    counter = counter or PassCounter()
    mask = cells[0].bool().cpu()
    chosen = [tuple(c) for c in mask.nonzero().tolist()]
    states = {}
    for name, latent in (("before", before[:1]), ("after", after[:1])):
        result = far_field_verify(decode, latent, chosen, mask, radius, downscale, decodes, seed, counter)
        states[name] = {"baseline": sample_baseline(result["samples"]),
                        "cells": {(c["y"], c["x"]): c["influence"] for c in result["cells"]}}
    rows = []
    for y, x in chosen:
        row = {"y": y, "x": x}
        for name, state in states.items():
            value = state["cells"].get((y, x))
            row[f"{name}_influence"] = value
            row[f"{name}_ratio"] = None if value is None else influence_ratio(value, state["baseline"])
        rows.append(row)
    return {"radius": radius, "decodes_per_state": decodes, "decoder_equivalent_passes": counter.passes,
            "baseline_before": states["before"]["baseline"], "baseline_after": states["after"]["baseline"],
            "cells": rows}


def check_reprobe_radius(radius: int, height: int, width: int) -> None:
    """Every cell needs pixels farther than `radius` cells away to measure (repaired cells and the sampled ordinary
    ones alike). The cell with the least room is the middle one: max(h // 2, w // 2) cells to the farthest edge."""
    most = max(height, width) // 2 - 1
    require(radius <= most,
            f"A re-probe radius of {radius} cells leaves no far field in this {width}x{height}-cell latent: some "
            f"cell has no pixel farther than {radius} cells away.",
            f"Set radius to at most {most}." if most >= 1 else
            "This latent is too small to re-probe: leave the VAE out (the repair itself works).")


def reprobe_text(result: dict) -> str:
    parts = []
    for row in result["cells"][:4]:
        if row["before_ratio"] is None:
            continue
        parts.append(f"({row['y']}, {row['x']}): far-field influence {row['before_ratio']:.3g}x -> "
                     f"{row['after_ratio']:.3g}x median")
    return "; ".join(parts) if parts else "re-probe: no repaired cell fit the decode budget"
