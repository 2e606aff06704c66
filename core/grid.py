"""Labeled image grids: column labels, row labels, axis titles and a footer, with Pillow's built-in font.

Layout, top to bottom: x-axis title, column labels, the rows of cells, footer. Left to right: the y-axis
title (rotated), row labels, the columns of cells. Cells are placed row-major, unscaled.
"""
import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .errors import LatentLabInputError, require
from .render import BACKGROUND, TEXT, font, from_pil, to_pil
from .sweep_grammar import CFG_RANGE, SEED_RANGE
from .sweep_plan import ORDER
from .validate import excerpt

MIN_FONT = 8
TITLE_COLOR = (255, 214, 120)
FOOTER_COLOR = (170, 170, 175)
MAX_GRID_CELLS = 65536
MAX_LABEL = 200  # characters in a label, title or footer setting (each is fitted by measuring it, char by char)
FOOTER_SETTINGS = {"sampler": str, "scheduler": str, "steps": numbers.Integral, "denoise": numbers.Real}


@dataclass
class GridSpec:
    rows: int
    cols: int
    cell_width: int
    cell_height: int
    col_labels: list | None = None
    row_labels: list | None = None
    x_title: str | None = None
    y_title: str | None = None
    footer: list = field(default_factory=list)
    font_size: int = 0  # 0: from the cell size
    gap: int = 4
    margin: int = 8


@dataclass
class GridLayout:
    width: int
    height: int
    font_size: int
    cells: list            # (x, y) top-left of each cell, row-major
    col_label_boxes: list  # (x, y, w, h) per column
    row_label_boxes: list  # (x, y, w, h) per row
    x_title_box: tuple | None
    y_title_box: tuple | None
    footer_box: tuple | None
    footer_lines: list     # the footer, word-wrapped to the footer box
    footer_size: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def auto_font_size(cell_width: int, cell_height: int) -> int:
    return max(12, min(64, round(min(cell_width, cell_height) / 16)))


def line_height(size: int) -> int:
    return size + max(4, size // 3)


def text_width(text: str, size: int) -> int:
    return int(font(size).getlength(text)) + 1


def layout(spec: GridSpec) -> GridLayout:
    require(spec.rows >= 1 and spec.cols >= 1, f"A grid needs at least one row and column, got {spec.rows}x{spec.cols}.")
    require(spec.cell_width >= 1 and spec.cell_height >= 1, "Grid cells must be at least 1 pixel.")
    size = spec.font_size or auto_font_size(spec.cell_width, spec.cell_height)
    small = max(MIN_FONT, round(size * 0.75))
    m, gap = spec.margin, spec.gap

    y_title_w = line_height(size) if spec.y_title else 0
    row_label_w = (max(text_width(t, size) for t in spec.row_labels) + 2 * gap) if spec.row_labels else 0
    left = m + y_title_w + row_label_w
    grid_w = spec.cols * spec.cell_width + (spec.cols - 1) * gap
    width = left + grid_w + m

    x_title_h = line_height(size) if spec.x_title else 0
    col_label_h = line_height(size) if spec.col_labels else 0
    top = m + x_title_h + col_label_h
    grid_h = spec.rows * spec.cell_height + (spec.rows - 1) * gap
    footer_lines = wrap_lines(spec.footer, width - 2 * m, small) if spec.footer else []
    footer_h = (gap + len(footer_lines) * line_height(small)) if footer_lines else 0
    height = top + grid_h + footer_h + m

    cells = [(left + c * (spec.cell_width + gap), top + r * (spec.cell_height + gap))
             for r in range(spec.rows) for c in range(spec.cols)]
    col_boxes = [(left + c * (spec.cell_width + gap), m + x_title_h, spec.cell_width, col_label_h)
                 for c in range(spec.cols)] if spec.col_labels else []
    row_boxes = [(m + y_title_w, top + r * (spec.cell_height + gap), row_label_w, spec.cell_height)
                 for r in range(spec.rows)] if spec.row_labels else []
    return GridLayout(
        width=width, height=height, font_size=size, cells=cells,
        col_label_boxes=col_boxes, row_label_boxes=row_boxes,
        x_title_box=(left, m, grid_w, x_title_h) if spec.x_title else None,
        y_title_box=(m, top, y_title_w, grid_h) if spec.y_title else None,
        footer_box=(m, top + grid_h + gap, width - 2 * m, footer_h - gap) if footer_lines else None,
        footer_lines=footer_lines, footer_size=small,
    )


def check_budget(grid: GridLayout, max_pixels: int) -> None:
    require(grid.pixels <= max_pixels,
            f"The grid would be {grid.width}x{grid.height} = {grid.pixels / 1e6:.1f} megapixels, above the "
            f"budget of {max_pixels / 1e6:.1f} megapixels.",
            "Lower cell_scale, sweep fewer values, or raise max_megapixels if your memory allows.")


def draw_grid(images, spec: GridSpec, max_pixels: int) -> torch.Tensor:
    """images: [N, H, W, 3] in 0..1 (N = rows x cols, row-major) -> IMAGE [1, H', W', 3]."""
    require(images.shape[0] == spec.rows * spec.cols,
            f"The grid has {spec.rows}x{spec.cols} = {spec.rows * spec.cols} cells but {images.shape[0]} images came in.")
    require(tuple(images.shape[1:3]) == (spec.cell_height, spec.cell_width),
            f"The images are {images.shape[2]}x{images.shape[1]} but the grid expects "
            f"{spec.cell_width}x{spec.cell_height}.")
    grid = layout(spec)
    check_budget(grid, max_pixels)
    return render_grid(images, spec, grid)


def render_grid(images, spec: GridSpec, grid: GridLayout) -> torch.Tensor:
    """draw_grid's drawing, on a layout already made (and checked against the budget) for this spec."""
    canvas = Image.new("RGB", (grid.width, grid.height), BACKGROUND)
    for image, (x, y) in zip(images, grid.cells):
        canvas.paste(to_pil(image), (x, y))
    draw = ImageDraw.Draw(canvas)
    size = grid.font_size
    for label, box in zip(spec.col_labels or [], grid.col_label_boxes):
        centered(draw, box, label, size)
    for label, box in zip(spec.row_labels or [], grid.row_label_boxes):
        centered(draw, box, label, size)
    if grid.x_title_box:
        centered(draw, grid.x_title_box, spec.x_title, size, TITLE_COLOR)
    if grid.y_title_box:
        vertical(canvas, grid.y_title_box, spec.y_title, size)
    if grid.footer_box:
        x, y, _, _ = grid.footer_box
        for line in grid.footer_lines:
            draw.text((x, y), line, font=font(grid.footer_size), fill=FOOTER_COLOR)
            y += line_height(grid.footer_size)
    return from_pil(canvas)[None]


def fit_text(text: str, width: int, size: int) -> tuple:
    """(text, size) that fits `width`: a smaller font first, then an ellipsis."""
    while size > MIN_FONT and text_width(text, size) > width:
        size -= 1
    while len(text) > 1 and text_width(text, size) > width:
        text = text[:-2] + "…" if len(text) > 2 else text[:1]
    return text, size


def centered(draw: ImageDraw.ImageDraw, box: tuple, text: str, size: int, fill=TEXT) -> None:
    x, y, w, h = box
    text, size = fit_text(text, w, size)
    tw = text_width(text, size)
    draw.text((x + (w - tw) / 2, y + (h - line_height(size)) / 2 + 1), text, font=font(size), fill=fill)


def vertical(canvas: Image.Image, box: tuple, text: str, size: int) -> None:
    x, y, w, h = box
    strip = Image.new("RGB", (h, w), BACKGROUND)
    centered(ImageDraw.Draw(strip), (0, 0, h, w), text, size, TITLE_COLOR)
    canvas.paste(strip.rotate(90, expand=True), (x, y))


def wrap_lines(lines: list, width: int, size: int) -> list:
    """Word-wrap each line to `width` pixels."""
    out = []
    for line in lines:
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and text_width(candidate, size) > width:
                out.append(current)
                current = word
            else:
                current = candidate
        out.append(current)
    return out


def scaled_size(width: int, height: int, scale: float) -> tuple:
    require(isinstance(scale, (int, float)) and 0 < scale <= 1, f"cell_scale is {excerpt(scale)}; it must lie in "
            "0..1 (above 0).", "Set cell_scale between 0.05 and 1.")
    return max(1, round(width * scale)), max(1, round(height * scale))


def pixel_budget(megapixels: float) -> int:
    """max_megapixels as a pixel count; NaN (which passes ComfyUI's range check) and other non-numbers refused."""
    require(isinstance(megapixels, (int, float)) and not isinstance(megapixels, bool) and 0 < megapixels < 1e6,
            f"max_megapixels is {excerpt(megapixels)}, not a positive number of megapixels.",
            "Set max_megapixels between 1 and 512.")
    return int(megapixels * 1e6)


def resize_images(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [N, H, W, 3] -> [N, height, width, 3], antialiased; unchanged when the size already fits."""
    if tuple(images.shape[1:3]) == (height, width):
        return images
    resized = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear",
                            antialias=True, align_corners=False)
    return resized.permute(0, 2, 3, 1).clamp(0, 1)


# ---- what Sweep Grid reads from a SWEEP_INFO -------------------------------------------------------------------

def grid_info(info) -> dict:
    """The parts of a SWEEP_INFO a grid is drawn from, checked against the schema CFG Sweep Sampler writes (see
    core/sweep_plan.sweep_info): a hand-made or edited one is refused with what is wrong, not a KeyError.
    Returns a new dict with version, order, axes (x, y), cells and settings, sizes bounded before use."""
    require(isinstance(info, dict), f"sweep_info is {type(info).__name__}, not a SWEEP_INFO.", _INFO_FIX)
    order = info.get("order", ORDER)
    require(order == ORDER, f"sweep_info has cell order {excerpt(order)}; a grid needs '{ORDER}'.", _INFO_FIX)
    axes = info.get("axes")
    require(isinstance(axes, dict), "sweep_info has no 'axes' dict.", _INFO_FIX)
    x = _axis(axes, "x", float)
    y = _axis(axes, "y", float if isinstance(axes.get("y"), dict) and axes["y"].get("name") == "guidance" else int)
    z = axes.get("z")
    require(z is None, f"sweep_info has a third axis ({excerpt(z.get('title') if isinstance(z, dict) else z)}): a "
            "grid lays out two.", "Sweep two of CFG, guidance and seeds (one value for the third), or make one "
            "grid per value of the third.")
    cells = info.get("cells")
    require(isinstance(cells, list), "sweep_info has no 'cells' list.", _INFO_FIX)
    expected = len(x["values"]) * len(y["values"])
    require(expected <= MAX_GRID_CELLS, f"sweep_info has {expected:,} cells; a grid holds at most "
            f"{MAX_GRID_CELLS:,}.", _INFO_FIX)
    require(len(cells) == expected, f"sweep_info lists {len(cells)} cells for {len(x['values'])} x "
            f"{len(y['values'])} axis values.", _INFO_FIX)
    return {"version": info.get("version"), "order": order, "axes": {"x": x, "y": y}, "cells": cells,
            "settings": _footer_settings(info.get("settings", {}))}


_INFO_FIX = "Connect the sweep_info output of CFG Sweep Sampler unchanged."


def _axis(axes: dict, key: str, kind: type) -> dict:
    axis = axes.get(key)
    require(isinstance(axis, dict), f"sweep_info has no axis '{key}'.", _INFO_FIX)
    values, labels, title = axis.get("values"), axis.get("labels"), axis.get("title")
    require(isinstance(values, list) and 1 <= len(values) <= MAX_GRID_CELLS,
            f"sweep_info axis '{key}' needs a list of 1 to {MAX_GRID_CELLS:,} values.", _INFO_FIX)
    require(all(_is_number(v, kind) for v in values),
            f"sweep_info axis '{key}' holds values that are not {_value_kind(axis, kind)}.",
            _INFO_FIX)
    require(isinstance(labels, list) and len(labels) == len(values),
            f"sweep_info axis '{key}' needs one label per value.", _INFO_FIX)
    for text in labels + [title]:
        _check_text(text, f"axis '{key}' label or title")
    return {**axis, "values": list(values), "labels": list(labels), "title": title}


def _value_kind(axis: dict, kind: type) -> str:
    if kind is int:
        return "seeds"
    return f"{'guidance' if axis.get('name') == 'guidance' else 'CFG'} values (0-100)"


def _is_number(value, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if kind is int:
        return isinstance(value, numbers.Integral) and SEED_RANGE[0] <= value <= SEED_RANGE[1]
    return CFG_RANGE[0] <= value <= CFG_RANGE[1]  # NaN fails too


def _check_text(text, what: str) -> None:
    require(isinstance(text, str), f"sweep_info {what} is {type(text).__name__}, not text.", _INFO_FIX)
    require(len(text) <= MAX_LABEL, f"sweep_info {what} '{excerpt(text)}' is {len(text):,} characters long; "
            f"the limit is {MAX_LABEL}.", _INFO_FIX)


def _footer_settings(settings) -> dict:
    require(isinstance(settings, dict), f"sweep_info settings is {type(settings).__name__}, not a dict.", _INFO_FIX)
    out = dict(settings)
    for key, kind in FOOTER_SETTINGS.items():
        if key not in settings:
            continue
        value = settings[key]
        if kind is str:
            _check_text(value, f"setting '{key}'")
        elif isinstance(value, bool) or not isinstance(value, kind) or not abs(value) <= 10 ** 9:
            raise LatentLabInputError(f"sweep_info setting '{key}' is {excerpt(value)}, not a number the "
                                      "sampler could have used.", _INFO_FIX)
    return out
