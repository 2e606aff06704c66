"""Per-channel statistics of a latent batch, and the Latent Stats report: a plain dict, its text and a histogram.

Everything is computed in float64 on the host, where any finite float32 value, its square and its sums stay finite.
"""
import math

import numpy as np
import torch

from . import render
from .errors import require
from .preview import pick_frame

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
SIGMA_K_RANGE = (0.5, 10.0)


def check_sigma_k(sigma_k: float) -> None:
    low, high = SIGMA_K_RANGE
    require(isinstance(sigma_k, (int, float)) and math.isfinite(sigma_k) and low <= sigma_k <= high,
            f"sigma_k {sigma_k} is outside {low:g}..{high:g}.",
            "Give k as a number of standard deviations, such as 3.")


def channel_stats(values: torch.Tensor, sigma_k: float = 3.0) -> dict:
    """values: [C, N] -> per-channel mean, std, min, max, percentiles and share beyond k sigma."""
    check_sigma_k(sigma_k)
    values = values.detach().cpu().double()
    mean = values.mean(dim=1)
    std = values.std(dim=1, correction=0)
    quantiles = torch.quantile(values, torch.tensor([p / 100 for p in PERCENTILES], dtype=values.dtype), dim=1)
    deviation = (values - mean[:, None]).abs()
    beyond = (deviation > sigma_k * std[:, None]).double().mean(dim=1)
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "min": values.min(dim=1).values.tolist(),
        "max": values.max(dim=1).values.tolist(),
        "percentiles": {f"p{p}": quantiles[i].tolist() for i, p in enumerate(PERCENTILES)},
        "beyond_k_sigma": beyond.tolist(),
    }


def per_item_stats(latent: torch.Tensor, sigma_k: float = 3.0) -> list[dict]:
    """[B, C, ...] -> one channel_stats dict per batch item (over every frame of a video)."""
    flat = latent.flatten(2)
    return [channel_stats(item, sigma_k) for item in flat]


def batch_stats(latent: torch.Tensor, sigma_k: float = 3.0) -> dict:
    return channel_stats(latent.transpose(0, 1).flatten(1), sigma_k)


# ---------------------------------------------------------------------------------------------- the report

def stats_report(values: torch.Tensor, names: list, sigma_k: float, colors: torch.Tensor | None = None,
                 format_key: str | None = None, units: str = "raw", frame: int = 0) -> dict:
    """The Latent Stats report of `values` [B, C, H, W] or [B, C, T, H, W] (in the units named), per item and over
    the batch; a video's figures cover all its frames, and "frame" holds those of frame `frame` alone.

    colors: each item's mean preview color [B, 3] (clamped to 0..1 here), or None for no color cast.
    """
    casts = colors.double().clamp(0, 1) if colors is not None else None
    items = []
    for index, item in enumerate(per_item_stats(values, sigma_k)):
        entry = {"index": index, "channels": _by_channel(item, names)}
        if casts is not None:
            entry["color_cast"] = _color(casts[index])
        items.append(entry)
    report = {
        "format": format_key,
        "units": units,
        "shape": list(values.shape),
        "sigma_k": sigma_k,
        "channel_names": list(names),
        "batch": _by_channel(batch_stats(values, sigma_k), names),
        "items": items,
    }
    if casts is not None:
        report["color_cast"] = _color(casts.mean(0))
    if values.ndim == 5:
        picked = pick_frame(values, frame)
        report["frame"] = {
            "index": frame, "frames": values.shape[2],
            "batch": _by_channel(batch_stats(picked, sigma_k), names),
            "items": [{"index": i, "channels": _by_channel(item, names)}
                      for i, item in enumerate(per_item_stats(picked, sigma_k))],
        }
    return report


def _by_channel(table: dict, names: list) -> list:
    rows = []
    for c, name in enumerate(names):
        row = {"name": name}
        for key, value in table.items():
            row[key] = {p: v[c] for p, v in value.items()} if isinstance(value, dict) else value[c]
        rows.append(row)
    return rows


def _color(rgb: torch.Tensor) -> dict:
    values = [round(float(v), 4) for v in rgb]
    return {"rgb": values, "hex": "#" + "".join(f"{round(v * 255):02x}" for v in values)}


def stats_text(report: dict) -> str:
    lines = [f"{report['format'] or 'unknown format'} · {report['units']} units · shape {report['shape']}"]
    for row in report["batch"]:
        lines.append(f"{row['name']:>12}: mean {row['mean']:+.3f} std {row['std']:.3f} "
                     f"min {row['min']:+.3f} max {row['max']:+.3f} >{report['sigma_k']:g}σ {100 * row['beyond_k_sigma']:.2f}%")
    if "color_cast" in report:
        cast = report["color_cast"]
        lines.append(f"color cast (mean preview color): {cast['hex']} rgb {cast['rgb']}")
    if "frame" in report:
        frame = report["frame"]
        lines.append(f"frame {frame['index']} of {frame['frames']}:")
        lines += [f"{row['name']:>12}: mean {row['mean']:+.3f} std {row['std']:.3f} min {row['min']:+.3f} "
                  f"max {row['max']:+.3f}" for row in frame["batch"]]
    return "\n".join(lines)


def stats_histogram(values: torch.Tensor, names: list, units: str, bins: int = 96) -> torch.Tensor:
    """IMAGE [1, H, W, 3]: one line per channel, the batch's values of `values` [B, C, H, W] over shared bins."""
    rows = values.detach().cpu().double().transpose(0, 1).flatten(1).numpy()
    edges = histogram_edges(float(rows.min()), float(rows.max()), bins)
    counts = np.stack([np.histogram(row, edges)[0] for row in rows]).astype(np.float64)
    title = f"value histogram per channel ({units} units)"
    return render.from_pil(render.histogram(counts, edges, names, title))[None]


def histogram_edges(low: float, high: float, bins: int) -> np.ndarray:
    """bins + 1 increasing edges over [low, high]; a single value gets a range around it wide enough to split
    into distinct float64 edges whatever its size."""
    if high <= low:
        pad = max(0.5, abs(low) * 1e-3)
        low, high = low - pad, high + pad
    return np.linspace(low, high, bins + 1)
