"""Which cells a sweep has, in which order, and how they are split into sampling chunks.

Cell order is seed-major, then guidance, then CFG:
    cell index = (seed_index * len(guidance_values) + guidance_index) * len(cfg_values) + cfg_index
(without a guidance axis, len(guidance_values) is 1). With one seed and no guidance axis the cells are simply
the CFG values in the order they were written.
Cells that share a seed and a guidance sit next to each other, so a chunk holds whole groups where it can and
the first model evaluation of a group is computed once.

The grid's axes: columns are CFG values, or the guidance values when CFG has one value; rows are seeds, or
the guidance values when both CFG and guidance vary and there is one seed. A sweep over all three has a third
axis (z) that a single grid does not lay out.
"""
import math
import numbers
from dataclasses import asdict, dataclass

from .errors import require
from .sweep_grammar import SEED_RANGE, label_number

ORDER = "seed-major"
ORDER_TEXT = ("seed-major: rows are seeds, columns are CFG values; "
              "cell index = seed_index x number_of_cfg_values + cfg_index")
GUIDANCE_ORDER_TEXT = ("seed-major, then guidance, then CFG; "
                       "cell index = (seed_index x number_of_guidance_values + guidance_index) x number_of_cfg_values"
                       " + cfg_index")


@dataclass(frozen=True)
class Cell:
    index: int
    row: int
    col: int
    cfg: float
    seed: int
    label: str
    guidance: float | None = None


def cfg_label(cfg: float) -> str:
    return f"CFG {label_number(cfg)}"


def seed_label(seed: int) -> str:
    return f"seed {seed}"


def guidance_label(guidance: float) -> str:
    return f"guidance {label_number(guidance)}"


def grid_axes(cfg_count: int, guidance_count: int | None, seed_count: int) -> tuple:
    """(x, y, z) axis names of a sweep; guidance_count None: no guidance axis. z is None for a two-axis sweep."""
    if guidance_count is None:
        return "cfg", "seed", None
    if cfg_count == 1:
        return "guidance", "seed", None
    if guidance_count == 1:
        return "cfg", "seed", None
    if seed_count == 1:
        return "cfg", "guidance", None
    return "cfg", "seed", "guidance"


def make_cells(cfg_values: list, seeds: list, guidance_values: list | None = None) -> list:
    """Cells in sweep order; guidance_values None: no guidance axis (every cell's guidance is None)."""
    guidances = [None] if guidance_values is None else [float(g) for g in guidance_values]
    x, y, _ = grid_axes(len(cfg_values), None if guidance_values is None else len(guidances), len(seeds))
    show_cfg = guidance_values is None or len(cfg_values) > 1
    show_guidance = guidance_values is not None and (len(guidances) > 1 or len(cfg_values) == 1)
    show_seed = len(seeds) > 1
    cells = []
    for s, seed in enumerate(seeds):
        for g, guidance in enumerate(guidances):
            for c, cfg in enumerate(cfg_values):
                parts = ([cfg_label(cfg)] if show_cfg else []) + ([guidance_label(guidance)] if show_guidance else [])
                parts += [seed_label(seed)] if show_seed else []
                place = {"cfg": c, "guidance": g, "seed": s}
                cells.append(Cell(len(cells), place[y], place[x], float(cfg), int(seed), " · ".join(parts),
                                  guidance))
    return cells


def check_cell_count(count: int, limit: int) -> None:
    require(count <= limit,
            f"The sweep has {count} cells, more than max_cells ({limit}).",
            "Shorten the CFG or seed list, or raise max_cells if you really want that many (each cell is one "
            "image in memory and one batch item while sampling).")


# The node's number inputs: (low, high, whole number, what to set instead). ComfyUI lets NaN through its range
# check (NaN < low is false) and an API client may post anything, so the node checks them itself.
SETTINGS = {
    "seed": (SEED_RANGE[0], SEED_RANGE[1], True, "Set seed to a whole number from 0 to 2^64 - 1."),
    "steps": (1, 10000, True, "Set steps to a whole number from 1 to 10000 (20 is usual)."),
    "denoise": (0.0, 1.0, False, "Set denoise to a number from 0 to 1 (1 for text-to-image, below 1 for img2img)."),
    "max_batch": (0, 4096, True, "Set max_batch to a whole number from 0 to 4096 (0: as many as memory allows)."),
    "max_cells": (1, 4096, True, "Set max_cells to a whole number from 1 to 4096."),
}


def check_settings(**values) -> dict:
    """The named number inputs, checked against SETTINGS; returns them as int or float."""
    return {name: _setting(name, value, *SETTINGS[name]) for name, value in values.items()}


def _setting(name: str, value, low, high, whole: bool, fix: str):
    shown = _excerpt(value)
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    require(number, f"{name} is {type(value).__name__} {shown}, not a number.", fix)
    integral = isinstance(value, numbers.Integral)
    require(integral or math.isfinite(value), f"{name} is {shown}, not a finite number.", fix)
    require(integral or not whole or float(value).is_integer(), f"{name} is {shown}, not a whole number.", fix)
    require(low <= value <= high, f"{name} is {shown}, outside {low}..{high}.", fix)
    return int(value) if whole else float(value)


def _excerpt(value, limit: int = 40) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(value) >= 10 ** limit:
        return f"a {int(value).bit_length()}-bit integer"  # str() of a long enough int raises
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def chunk_capacity(free_bytes: float, bytes_per_cell: float, max_batch: int = 0) -> int:
    """How many cells may sample together: what fits in free memory, at most max_batch (0: no limit), at least 1."""
    fits = int(free_bytes // bytes_per_cell) if bytes_per_cell > 0 else 1 << 30
    if max_batch > 0:
        fits = min(fits, max_batch)
    return max(1, fits)


def plan_chunks(groups: list, capacity: int) -> list:
    """Split cells (given by their group id, e.g. the seed row, contiguous) into chunks of at most `capacity`.

    Chunks are as even as possible and hold whole groups where a group fits; a group larger than the
    capacity is split into even pieces. Returns lists of cell indices, in cell order.
    """
    require(capacity >= 1, f"Chunk capacity must be at least 1, got {capacity}.")
    runs = _runs(groups)
    chunks = []
    if runs and max(len(run) for run in runs) <= capacity:
        per_chunk = _even_sizes(runs, capacity)
        start = 0
        for count in per_chunk:
            chunks.append([i for run in runs[start:start + count] for i in run])
            start += count
        return chunks
    for run in runs:
        pieces = math.ceil(len(run) / capacity)
        start = 0
        for size in _split(len(run), pieces):
            chunks.append(run[start:start + size])
            start += size
    return chunks


def _runs(groups: list) -> list:
    runs = []
    for index, group in enumerate(groups):
        if runs and groups[runs[-1][0]] == group:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def _even_sizes(runs: list, capacity: int) -> list:
    """Runs per chunk: the fewest chunks whose cell totals stay within capacity, spread evenly. Every run fits
    the capacity, so one run per chunk always does."""
    fewest = math.ceil(sum(len(r) for r in runs) / capacity)
    for chunks in range(fewest, len(runs) + 1):
        counts = _split(len(runs), chunks)
        starts = [sum(counts[:i]) for i in range(chunks)]
        if all(sum(len(r) for r in runs[start:start + count]) <= capacity for start, count in zip(starts, counts)):
            return counts


def _split(total: int, parts: int) -> list:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def state_bytes_per_cell(latent_numel: int, element_size: int = 4, buffers: int = 12) -> int:
    """Sampler state per cell: x, noise, latent, denoised and multistep history, about `buffers` latents."""
    return latent_numel * element_size * buffers


INFO_VERSION = 1


def _axis_entry(name: str, values: list, text: str) -> dict:
    if name == "seed":
        return {"name": "seed", "title": "seed", "values": [int(s) for s in values],
                "labels": [seed_label(s) for s in values], "text": text}
    if name == "guidance":
        return {"name": "guidance", "title": "guidance", "values": [float(v) for v in values],
                "labels": [guidance_label(v) for v in values], "text": text}
    return {"name": "cfg", "title": "CFG scale", "values": [float(v) for v in values],
            "labels": [cfg_label(v) for v in values], "text": text}


def sweep_info(cfg_values: list, seeds: list, cells: list, settings: dict, run: dict,
               cfg_text: str = "", seeds_text: str = "", guidance_values: list | None = None,
               guidance_text: str = "") -> dict:
    """The SWEEP_INFO value: axes, cells in order, the fixed settings and how the run went (JSON-safe).
    guidance_values None: no guidance axis (the keys a CFG-only sweep has always had)."""
    lists = {"cfg": (cfg_values, cfg_text), "seed": (seeds, seeds_text), "guidance": (guidance_values, guidance_text)}
    x, y, z = grid_axes(len(cfg_values), None if guidance_values is None else len(guidance_values), len(seeds))
    axes = {key: _axis_entry(name, *lists[name]) for key, name in (("x", x), ("y", y), ("z", z)) if name}
    settings = dict(settings)
    if guidance_values is not None:
        if x != "cfg":
            settings["cfg"] = float(cfg_values[0])
        if len(guidance_values) == 1 and "guidance" not in (x, y, z):
            settings["guidance"] = float(guidance_values[0])
    return {
        "version": INFO_VERSION,
        "order": ORDER,
        "order_text": ORDER_TEXT if guidance_values is None else GUIDANCE_ORDER_TEXT,
        "axes": axes,
        "cells": [asdict(cell) for cell in cells],
        "settings": settings,
        "run": dict(run),
    }


def check_info(info) -> dict:
    require(isinstance(info, dict) and info.get("version") == INFO_VERSION and "axes" in info and "cells" in info,
            "The sweep_info input is not a Latent Lab SWEEP_INFO.",
            "Connect the sweep_info output of CFG Sweep Sampler.")
    return info


def _plain_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and abs(value) <= 10 ** 9


def _whole_number(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def settings_line(info: dict) -> str:
    settings = info.get("settings", {})
    parts = [str(settings[k]) for k in ("sampler", "scheduler") if k in settings]
    if "steps" in settings:
        parts.append(f"{settings['steps']} steps")
    if "denoise" in settings:
        parts.append(f"denoise {settings['denoise']:g}")
    for key, label in (("cfg", cfg_label), ("guidance", guidance_label)):
        if _plain_number(settings.get(key)):
            parts.append(label(settings[key]))
    axes = info["axes"]
    seed_axes = [axis for axis in axes.values() if isinstance(axis, dict) and axis.get("name", "seed") == "seed"]
    if seed_axes and len(seed_axes[0]["values"]) == 1:
        parts.append(seed_label(seed_axes[0]["values"][0]))
    elif not seed_axes and _whole_number(settings.get("seed")):
        parts.append(seed_label(settings["seed"]))
    return " · ".join(parts)
