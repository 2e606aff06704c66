"""Drawing: colormaps, labeled tiles, histograms and text, with Pillow's built-in font."""
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# A coolwarm-like diverging map: -1 blue, 0 light gray, +1 red.
_DIVERGING = np.array([
    [0.230, 0.299, 0.754],
    [0.552, 0.690, 0.996],
    [0.865, 0.865, 0.865],
    [0.958, 0.603, 0.482],
    [0.706, 0.016, 0.150],
])
# Dark to bright (inferno-like): a "black hole" cell reads as black.
_SEQUENTIAL = np.array([
    [0.001, 0.000, 0.014], [0.258, 0.039, 0.406], [0.578, 0.148, 0.404],
    [0.865, 0.317, 0.226], [0.988, 0.645, 0.040], [0.988, 0.998, 0.645],
])

PALETTE = [
    (230, 230, 230), (230, 80, 80), (90, 200, 90), (90, 140, 240),
    (240, 200, 60), (200, 90, 220), (60, 210, 210), (250, 150, 60),
]

BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _ramp(anchors: np.ndarray, unit: torch.Tensor) -> torch.Tensor:
    """unit in [0, 1] (clamped) -> RGB in [0, 1], shape [..., 3], interpolated between the anchor rows."""
    colors = torch.tensor(anchors, dtype=torch.float32, device=unit.device)
    position = unit.float().clamp(0, 1) * (len(colors) - 1)
    low = position.floor().long().clamp(max=len(colors) - 2)
    frac = (position - low).unsqueeze(-1)
    return colors[low] * (1 - frac) + colors[low + 1] * frac


def diverging(values: torch.Tensor) -> torch.Tensor:
    """values in [-1, 1] (clamped) -> RGB in [0, 1], shape [..., 3]."""
    return _ramp(_DIVERGING, (values.float().clamp(-1, 1) + 1) / 2)


def sequential(values: torch.Tensor) -> torch.Tensor:
    """values in [0, 1] (clamped) -> RGB in [0, 1], shape [..., 3]; dark to bright."""
    return _ramp(_SEQUENTIAL, values)


def to_pil(image: torch.Tensor) -> Image.Image:
    """[H, W, 3] float in [0, 1] -> PIL image."""
    array = (image.detach().cpu().float().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def text_height(lines: int, size: int) -> int:
    return lines * (size + 3) + 4


def draw_lines(draw: ImageDraw.ImageDraw, xy: tuple, lines: list, size: int, fill=TEXT) -> None:
    x, y = xy
    for line in lines:
        draw.text((x, y), line, font=font(size), fill=fill)
        y += size + 3


def labeled_tile(tile: torch.Tensor, lines: list, size: int) -> Image.Image:
    """A tile [H, W, 3] with a text band above it."""
    band = text_height(len(lines), size)
    canvas = Image.new("RGB", (tile.shape[1], tile.shape[0] + band), BACKGROUND)
    canvas.paste(to_pil(tile), (0, band))
    draw_lines(ImageDraw.Draw(canvas), (3, 2), lines, size)
    return canvas


def grid(tiles: list, columns: int, gap: int = 4) -> Image.Image:
    """Equal-sized PIL tiles, row-major."""
    width, height = tiles[0].size
    rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * width + (columns + 1) * gap, rows * height + (rows + 1) * gap), BACKGROUND)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        canvas.paste(tile, (gap + col * (width + gap), gap + row * (height + gap)))
    return canvas


def histogram(counts: np.ndarray, edges: np.ndarray, names: list, title: str,
              width: int = 640, height: int = 320) -> Image.Image:
    """One line per channel over shared bin edges; counts: [C, bins]."""
    size = 13
    left, right, top, bottom = 48, 12, 10 + text_height(1, size), 10 + text_height(1, size)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(90, 90, 90))
    lo, hi = float(edges[0]), float(edges[-1])
    if lo < 0 < hi:
        zero_x = left + plot_w * (0 - lo) / (hi - lo)
        draw.line([zero_x, top, zero_x, top + plot_h], fill=(80, 80, 80))
    peak = max(float(counts.max()), 1.0)
    centers = (edges[:-1] + edges[1:]) / 2
    xs = left + plot_w * (centers - lo) / max(hi - lo, 1e-12)
    for channel, row in enumerate(counts):
        ys = top + plot_h * (1 - row / peak)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=PALETTE[channel % len(PALETTE)], width=2)
    draw.text((4, 4), title, font=font(size), fill=TEXT)
    draw.text((left, top + plot_h + 4), f"{lo:.3g}", font=font(size), fill=TEXT)
    hi_label = f"{hi:.3g}"
    draw.text((left + plot_w - draw.textlength(hi_label, font=font(size)), top + plot_h + 4),
              hi_label, font=font(size), fill=TEXT)
    legend_x = left + 70
    for channel, name in enumerate(names):
        draw.text((legend_x, top + plot_h + 4), name, font=font(size), fill=PALETTE[channel % len(PALETTE)])
        legend_x += draw.textlength(name, font=font(size)) + 12
        if legend_x > width - 60:
            break
    return canvas
