"""Probe heatmaps: one color per latent cell, flagged cells ringed, a title band and a color bar."""
import math

import torch
from PIL import Image, ImageDraw

from .probe_far_field import to_pixels
from .probe_moments import CellStats
from .render import BACKGROUND, diverging, draw_lines, font, from_pil, sequential, text_height, to_pil

UNMEASURED = (0.24, 0.24, 0.26)
RING = (255, 255, 255)
RING_EDGE = (0, 0, 0)


def cell_size(height: int, width: int) -> int:
    return int(min(32, max(4, 512 // max(height, width))))


def colorize(values: torch.Tensor, colormap, low: float, high: float) -> torch.Tensor:
    """[h, w] with NaN -> RGB [h, w, 3]; NaN cells gray."""
    span = max(high - low, 1e-12)
    unit = ((values - low) / span).nan_to_num(0.5)
    rgb = sequential(unit) if colormap == "sequential" else diverging(unit * 2 - 1)
    rgb[torch.isnan(values)] = torch.tensor(UNMEASURED)
    return rgb


def color_bar(colormap, width: int, low: float, high: float, labels: tuple, size: int) -> Image.Image:
    ramp = torch.linspace(low, high, max(width - 8, 2))
    strip = colorize(ramp[None].repeat(10, 1), colormap, low, high)
    bar = Image.new("RGB", (width, 12 + text_height(1, size)), BACKGROUND)
    bar.paste(to_pil(strip), (4, 1))
    draw = ImageDraw.Draw(bar)
    left, right = labels
    draw.text((4, 12), left, font=font(size), fill=(235, 235, 235))
    draw.text((width - 4 - draw.textlength(right, font=font(size)), 12), right, font=font(size), fill=(235, 235, 235))
    return bar


PAD = 16  # room around the map for rings and numbers at its edges


def ring_cells(draw: ImageDraw.ImageDraw, cells: list, cell: int, left: int, top: int, columns: int) -> None:
    for number, (y, x) in enumerate(cells):
        x0, y0 = left + x * cell - 2, top + y * cell - 2
        x1, y1 = left + (x + 1) * cell + 1, top + (y + 1) * cell + 1
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=RING_EDGE, width=1)
        draw.rectangle([x0, y0, x1, y1], outline=RING, width=2)
        if number < 9:
            size = max(9, min(14, cell))
            label_x = x1 + 3 if x < columns / 2 else x0 - 3 - size * 0.6
            draw.text((label_x, y0 - 2), str(number + 1), font=font(size), fill=RING)


def heatmap(values: torch.Tensor, colormap: str, low: float, high: float, title: list, bar_labels: tuple,
            marks: list) -> torch.Tensor:
    """A map of [h, w] cell values -> IMAGE [1, H, W, 3], flagged cells (`marks`, (y, x)) ringed."""
    height, width = values.shape
    cell = cell_size(height, width)
    size = 12 if cell * width >= 256 else 10
    rgb = colorize(values.float().cpu(), colormap, low, high)
    tile = rgb.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    map_w, map_h = width * cell, height * cell
    canvas_w = max(map_w + 2 * PAD, 256)
    band = text_height(len(title), size)
    bar = color_bar(colormap, canvas_w, low, high, bar_labels, size)
    canvas = Image.new("RGB", (canvas_w, band + map_h + 2 * PAD + bar.size[1]), BACKGROUND)
    left = (canvas_w - map_w) // 2
    canvas.paste(to_pil(tile), (left, band + PAD))
    canvas.paste(bar, (0, band + map_h + 2 * PAD))
    draw = ImageDraw.Draw(canvas)
    draw_lines(draw, (3, 2), title, size)
    ring_cells(draw, marks, cell, left, band + PAD, width)
    return from_pil(canvas)[None]


def placeholder(lines: list, height: int, width: int) -> torch.Tensor:
    """A dark panel with text, the size the maps would have had (for a missing map)."""
    cell = cell_size(height, width)
    canvas = Image.new("RGB", (max(width * cell, 256), height * cell + 40), BACKGROUND)
    draw_lines(ImageDraw.Draw(canvas), (6, 6), lines, 12)
    return from_pil(canvas)[None]


def logvar_map(stats: CellStats, marks: list, threshold: float) -> torch.Tensor:
    height, width = stats.shape
    if stats.logvar is None:
        return placeholder(["This VAE has no log-variance output.", "Flags use the mean magnitude only."], height, width)
    values, median, scale = stats.logvar.values, stats.logvar.median, stats.logvar.scale
    low, high = median - 1.5 * threshold * scale, median + 1.5 * threshold * scale
    at = divmod(int(torch.argmin(values)), width)
    title = ["log-variance, channel mean (read before clamp)",
             f"min {float(values.min()):.2f} at {at}, median {median:.2f}; colors clipped"]
    return heatmap(values, "sequential", low, high, title, (f"{low:.2f}", f"{high:.2f}"), marks)


def magnitude_map(stats: CellStats, marks: list, threshold: float) -> torch.Tensor:
    z = stats.magnitude.z
    bound = 1.5 * threshold
    width = z.shape[1]
    at = divmod(int(torch.argmax(z)), width)
    title = [f"mean magnitude, robust z (median {stats.magnitude.median:.3g})",
             f"max z {float(z.max()):+.1f} at {at}; flag at z >= {threshold:g}"]
    return heatmap(z, "diverging", -bound, bound, title, (f"z {-bound:+.0f}", f"z {bound:+.0f}"), marks)


def influence_map(ratio: torch.Tensor, section: dict, marks: list) -> torch.Tensor:
    finite = ratio[torch.isfinite(ratio) & (ratio > 0)]
    top = float(finite.max()) if finite.numel() else 10.0
    decades = min(6, max(1, math.ceil(math.log10(max(top, 10.0)))))
    logs = torch.log10(ratio.clamp(min=1e-30))
    logs[~torch.isfinite(ratio)] = float("nan")
    title = [f"far-field influence / median cell (log), radius {section['radius']}",
             f"{section['mode']} mode, {section['decoder_equivalent_passes']:g} decoder passes"
             + ("; gray: not measured" if section["mode"] == "verify" else "")]
    labels = (f"1/{10 ** decades:g}x", f"{10 ** decades:g}x")
    return heatmap(logs, "diverging", -decades, decades, title, labels, marks)


def mask_image(mask: torch.Tensor, downscale: int) -> torch.Tensor:
    """[h, w] bool -> MASK [1, h*d, w*d] float."""
    return to_pixels(mask.float(), downscale)[None]
