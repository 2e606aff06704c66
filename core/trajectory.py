"""A record of each model call's x0 prediction during sampling, and its filmstrip and stats plots.

What is kept per call is small: per item and channel mean, std, min and max (scaled units, over every frame of a
video) and a linear preview (a video's middle frame) shrunk to at most `preview_side` cells a side, as uint8. A record holds the last few sampling runs so a viewer
can pick the run whose output it was given.
"""
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from . import render
from .errors import require
from .formats import RgbAffine
from .preview import linear_rgb

STATS = ("mean", "std", "min", "max")
MAX_FRAMES = 2000


@dataclass
class Frame:
    percents: list       # progress per item, percent of the run
    sigmas: list         # sigma per item
    stats: torch.Tensor  # [B, C, 4]: mean, std, min, max (scaled units), float32 on the CPU
    preview: torch.Tensor | None  # [B, h, w, 3] uint8 on the CPU; None for non-image latents


@dataclass
class Run:
    sigmas: list
    frames: list = field(default_factory=list)
    output: torch.Tensor | None = None  # what the sampler returned (raw LATENT samples), on the CPU
    dropped: int = 0

    @property
    def batch(self) -> int:
        return self.frames[0].stats.shape[0] if self.frames else 0


def frame_stats(x0: torch.Tensor) -> torch.Tensor:
    values = x0.detach().float().flatten(2)
    return torch.stack([values.mean(2), values.std(2, correction=0), values.amin(2), values.amax(2)], dim=2).cpu()


def small_preview(x0: torch.Tensor, affine: RgbAffine, side: int) -> torch.Tensor | None:
    """A video prediction [B, C, T, H, W] is shown by its middle frame."""
    if x0.ndim == 5:
        x0 = x0[:, :, x0.shape[2] // 2]
    if x0.ndim != 4:
        return None
    rgb = linear_rgb(x0.detach().float(), affine)
    height, width = rgb.shape[2:]
    if max(height, width) > side:
        size = (max(1, round(height * side / max(height, width))), max(1, round(width * side / max(height, width))))
        rgb = F.adaptive_avg_pool2d(rgb, size)
    return (rgb.nan_to_num(0.0).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu()


class Trajectory:
    """Filled by the trajectory MODEL patch while sampling; read by the viewer node afterwards.

    affine maps SCALED latents to RGB (core.correct_ops.scaled_affine), since x0 predictions are scaled.
    """

    def __init__(self, affine: RgbAffine, channel_names: tuple, preview_side: int = 64, max_runs: int = 4):
        self.affine = affine
        self.channel_names = tuple(channel_names)
        self.preview_side = preview_side
        self.max_runs = max_runs
        self.runs = []

    def begin_run(self, sigmas: list) -> Run:
        self.runs = self.runs[-(self.max_runs - 1):] if self.max_runs > 1 else []
        self.runs.append(Run(list(sigmas)))
        return self.runs[-1]

    def record(self, x0: torch.Tensor, sigmas: list, percents: list) -> None:
        run = self.runs[-1] if self.runs and self.runs[-1].output is None else self.begin_run([])
        if len(run.frames) >= MAX_FRAMES:
            run.dropped += 1
            return
        run.frames.append(Frame(list(percents), list(sigmas), frame_stats(x0),
                                small_preview(x0, self.affine, self.preview_side)))

    def end_run(self, output: torch.Tensor) -> None:
        if self.runs and self.runs[-1].output is None:
            self.runs[-1].output = output.detach().float().cpu()

    def find_run(self, samples: torch.Tensor | None) -> tuple:
        """(run, matched): the newest finished run whose output equals `samples`, else the newest run with frames."""
        if samples is not None:
            for run in reversed(self.runs):
                out = run.output
                if out is not None and out.shape == samples.shape and \
                        torch.allclose(out, samples.detach().float().cpu(), rtol=1e-4, atol=1e-4):
                    return run, True
        for run in reversed(self.runs):
            if run.frames:
                return run, False
        return None, False


def recorded_run(trajectory: Trajectory, samples: torch.Tensor | None) -> tuple:
    """(run, matched) as Trajectory.find_run, for a viewer: refuses a record with nothing to show."""
    run, matched = trajectory.find_run(samples)
    require(run is not None, "Nothing was recorded: no sampler has run with this recorder's model.",
            "Connect the recorder's MODEL output (directly or through other model nodes) to the sampler, and that "
            "sampler's LATENT output to this node.")
    require(bool(run.frames), "Nothing was recorded: the sampler that made this LATENT ran with this recorder's "
            "model, but no model call reached the recorder's post-CFG hook.",
            "Sample with KSampler, KSamplerAdvanced or SamplerCustomAdvanced with a CFG guider; a guider or model "
            "node that drops post-CFG functions (or replaces CFG entirely) bypasses the recorder.")
    return run, matched


def choose_frames(total: int, count: int) -> list:
    """Up to `count` indices spread evenly over 0..total-1, first and last included."""
    if total <= count:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def _tile(preview: torch.Tensor, width: int) -> torch.Tensor:
    image = preview.permute(2, 0, 1)[None].float() / 255
    height = max(1, round(preview.shape[0] * width / preview.shape[1]))
    mode = "nearest" if width >= preview.shape[1] else "area"
    return F.interpolate(image, size=(height, width), mode=mode)[0].permute(1, 2, 0)


def filmstrip(run: Run, count: int = 8, tile_width: int = 128) -> torch.Tensor:
    """IMAGE [B, H, W, 3]: one row of x0 previews per batch item, labeled with progress and sigma."""
    frames = [run.frames[i] for i in choose_frames(len(run.frames), count)]
    frames = [f for f in frames if f.preview is not None]
    if not frames:
        return torch.zeros(max(run.batch, 1), 64, 64, 3)
    size = max(9, min(14, tile_width // 9))
    rows = []
    for item in range(run.batch):
        tiles = [render.labeled_tile(_tile(f.preview[item], tile_width), _frame_label(f, item), size) for f in frames]
        rows.append(render.from_pil(render.grid(tiles, len(tiles))))
    return torch.stack(rows)


def _frame_label(frame: Frame, item: int) -> list:
    broken = "" if bool(torch.isfinite(frame.stats[item]).all()) else " NaN/inf"
    return [f"{frame.percents[item]:.0f}%{broken}", f"sigma {frame.sigmas[item]:.3g}"]


def series(run: Run, item: int) -> tuple:
    """(x in percent [N], stats [N, C, 4]) for one batch item."""
    x = np.array([f.percents[item] for f in run.frames], dtype=np.float64)
    stats = torch.stack([f.stats[item] for f in run.frames]).double().numpy()
    return x, stats


PLOT_LEFT, PLOT_RIGHT_MARGIN = 52, 10
NON_FINITE_MARK = (255, 40, 40)  # a vertical bar at each model call whose prediction had NaN or infinite values


def progress_x(percent: float, width: int) -> float:
    """Where a progress percentage lands on a stats plot `width` pixels wide."""
    return float(_to_screen(percent, 0, 100, PLOT_LEFT, width - PLOT_RIGHT_MARGIN - PLOT_LEFT))


def _to_screen(values, low: float, high: float, start: float, length: float, flip: bool = False) -> np.ndarray:
    position = (np.asarray(values, dtype=np.float64) - low) / max(high - low, 1e-12)
    return start + length * (1 - position if flip else position)


def _panel(draw, box: tuple, title: str, low: float, high: float, size: int, references=()) -> tuple:
    left, top, right, bottom = box
    draw.rectangle(box, outline=(90, 90, 90))
    draw.text((left + 4, top + 2), title, font=render.font(size), fill=render.TEXT)
    for value in references:
        if low < value < high:
            y = float(_to_screen(value, low, high, top, bottom - top, flip=True))
            for x in range(int(left), int(right), 8):
                draw.line([x, y, min(x + 4, right), y], fill=(120, 120, 120))
    for value in (low, high):
        y = float(_to_screen(value, low, high, top, bottom - top, flip=True))
        draw.text((4, y - size / 2), f"{value:+.3g}", font=render.font(size), fill=render.TEXT)
    return lambda xs, ys: list(zip(_to_screen(xs, 0, 100, left, right - left).tolist(),
                                   _to_screen(ys, low, high, top, bottom - top, flip=True).tolist()))


def _range(values: np.ndarray, extra=()) -> tuple:
    """The span of the finite values and `extra`, padded; (-1, 1) when there is none."""
    finite = values[np.isfinite(values)]
    ends = ([float(finite.min()), float(finite.max())] if finite.size else []) + [float(v) for v in extra]
    if not ends:
        return -1.0, 1.0
    low, high = min(ends), max(ends)
    pad = max((high - low) * 0.06, 1e-3)
    return low - pad, high + pad


def _finite_spans(ok: np.ndarray) -> list:
    """(start, stop) index ranges of consecutive True values."""
    spans, start = [], None
    for i, value in enumerate(list(ok) + [False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _curve(draw, to_xy, x: np.ndarray, y: np.ndarray, color) -> None:
    """A line through the finite points, broken where a value is NaN or infinite."""
    for a, b in _finite_spans(np.isfinite(y)):
        points = to_xy(x[a:b], y[a:b])
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        else:
            draw.point(points, fill=color)


def _band(draw, to_xy, x: np.ndarray, low: np.ndarray, high: np.ndarray, color) -> None:
    for a, b in _finite_spans(np.isfinite(low) & np.isfinite(high)):
        if b - a > 1:
            draw.polygon(to_xy(x[a:b], high[a:b]) + to_xy(x[a:b][::-1], low[a:b][::-1]), fill=color + (40,))


def stats_plot(run: Run, item: int, names: tuple, boundary: float = 0.0,
               width: int = 720, height: int = 520) -> Image.Image:
    """Two panels over sampling progress: min and max per channel (with +-boundary), mean with a +-std band.
    Model calls whose prediction had NaN or infinite values are marked with a red bar."""
    size = 12
    canvas = Image.new("RGB", (width, height), render.BACKGROUND)
    draw = ImageDraw.Draw(canvas, "RGBA")
    x, stats = series(run, item)
    broken = ~np.isfinite(stats).all(axis=(1, 2))
    left, right, gap = PLOT_LEFT, width - PLOT_RIGHT_MARGIN, 14
    top = 8 + render.text_height(1, size)
    legend_h = render.text_height(1, size) + 6
    panel_h = (height - top - legend_h - gap - render.text_height(1, size)) // 2
    title = f"item {item} · {len(run.frames)} model calls · x0 in scaled units"
    if broken.any():
        title += f" · {int(broken.sum())} non-finite (red)"
    draw.text((8, 4), title, font=render.font(size), fill=render.TEXT)

    references = (boundary, -boundary) if boundary > 0 else ()
    low, high = _range(stats[:, :, 2:4], references)
    box1 = (left, top, right, top + panel_h)
    to_xy = _panel(draw, box1, "min / max per channel", low, high, size, references)
    for c in range(stats.shape[1]):
        for k in (2, 3):
            _curve(draw, to_xy, x, stats[:, c, k], render.PALETTE[c % len(render.PALETTE)])

    mean, std = stats[:, :, 0], stats[:, :, 1]
    low, high = _range(np.concatenate([mean - std, mean + std]))
    box2 = (left, top + panel_h + gap, right, top + 2 * panel_h + gap)
    to_xy = _panel(draw, box2, "mean ± std per channel", low, high, size, (0.0,))
    for c in range(stats.shape[1]):
        color = render.PALETTE[c % len(render.PALETTE)]
        _band(draw, to_xy, x, mean[:, c] - std[:, c], mean[:, c] + std[:, c], color)
        _curve(draw, to_xy, x, mean[:, c], color)

    for percent in x[broken]:
        column = round(progress_x(float(percent), width))
        draw.line([column, box1[1], column, box2[3]], fill=NON_FINITE_MARK, width=3)

    axis_y = box2[3] + 3
    draw.text((left, axis_y), "0%", font=render.font(size), fill=render.TEXT)
    draw.text((right - 34, axis_y), "100%", font=render.font(size), fill=render.TEXT)
    draw.text(((left + right) // 2 - 50, axis_y), "sampling progress", font=render.font(size), fill=render.TEXT)
    legend_x = left
    for c, name in enumerate(names):
        draw.text((legend_x, axis_y + legend_h - 4), name, font=render.font(size),
                  fill=render.PALETTE[c % len(render.PALETTE)])
        legend_x += draw.textlength(name, font=render.font(size)) + 14
        if legend_x > width - 60:
            break
    return canvas


def plots(run: Run, names: tuple, boundary: float = 0.0) -> torch.Tensor:
    """IMAGE [B, H, W, 3]: one stats plot per batch item."""
    return torch.stack([render.from_pil(stats_plot(run, item, names, boundary)) for item in range(run.batch)])


def summary(run: Run, names: tuple) -> dict:
    """First and last recorded call per item and channel: how far values spread and drifted."""
    first, last = run.frames[0].stats, run.frames[-1].stats
    items = []
    for item in range(run.batch):
        channels = []
        for c, name in enumerate(names):
            channels.append({
                "name": name,
                "first": dict(zip(STATS, [round(v, 4) for v in first[item, c].tolist()])),
                "last": dict(zip(STATS, [round(v, 4) for v in last[item, c].tolist()])),
            })
        non_finite = sum(not bool(torch.isfinite(f.stats[item]).all()) for f in run.frames)
        items.append({"index": item, "channels": channels, "non_finite_calls": non_finite})
    return {"calls": len(run.frames), "dropped_calls": run.dropped, "steps": max(len(run.sigmas) - 1, 0),
            "items": items}


def summary_text(report: dict, matched: bool) -> str:
    lines = [f"{report['calls']} model calls over {report['steps']} steps"
             + ("" if matched else " · the LATENT matches no recorded run: showing the latest")]
    for item in report["items"][:4]:
        if item["non_finite_calls"]:
            lines.append(f"item {item['index']}: {item['non_finite_calls']} non-finite model call(s) (NaN or inf)")
        for channel in item["channels"]:
            a, b = channel["first"], channel["last"]
            lines.append(f"item {item['index']} {channel['name']:>12}: range [{a['min']:+.2f}, {a['max']:+.2f}] -> "
                         f"[{b['min']:+.2f}, {b['max']:+.2f}], mean {a['mean']:+.3f} -> {b['mean']:+.3f}")
    return "\n".join(lines)
