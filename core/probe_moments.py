"""The encoder's moments per latent cell, their robust z-scores, and the flagged cells.

Each cell gets two numbers: the channel-mean log-variance (read before ComfyUI's clamp to [-30, 20]) and the RMS
magnitude of the mean over channels. A cell is flagged when its log-variance is `threshold` robust standard
deviations (1.4826 x MAD) below the median, or its magnitude that many above. Severity (the larger of the two
z-scores, log-variance counted downwards) and the ranking of flagged cells are computed once per encode.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import require

LOGVAR_SCALE_FLOOR = 0.25     # nats: at threshold 6 a flagged logvar is at least 1.5 below the median
MAGNITUDE_SCALE_FLOOR = 0.05  # of the median magnitude: at threshold 6, at least 30% above it
MAX_LISTED_CELLS = 32


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


def robust_z(values: torch.Tensor, floor: float = 0.0) -> tuple:
    """(z, median, scale): z = (x - median) / scale, scale = max(1.4826 * MAD, floor).

    The floor keeps a nearly constant map (a flat image) from turning tiny differences into huge z.
    """
    flat = values.flatten().double()
    median = flat.median()
    scale = max(float(1.4826 * (flat - median).abs().median()), floor, 1e-6 * (1.0 + abs(float(median))))
    z = ((values.double() - median) / scale).float()
    return z, float(median), scale


@dataclass(frozen=True)
class CellMap:
    """One value per cell [h, w] with its robust z-score, median and scale."""
    values: torch.Tensor
    z: torch.Tensor
    median: float
    scale: float

    @classmethod
    def of(cls, values: torch.Tensor, floor: float) -> "CellMap":
        return cls(values, *robust_z(values, floor))

    def summary(self) -> dict:
        return {"min": round(float(self.values.min()), 4), "median": round(self.median, 4),
                "max": round(float(self.values.max()), 4), "robust_scale": round(self.scale, 5)}


@dataclass(frozen=True)
class CellStats:
    magnitude: CellMap           # RMS of the mean over channels
    logvar: Optional[CellMap]    # channel-mean log-variance; None for a VAE without one
    severity: torch.Tensor       # [h, w]: how far below (logvar) or above (magnitude) the typical cell, in robust z

    @property
    def shape(self) -> tuple:
        return tuple(self.magnitude.values.shape)


def cell_stats(mean: torch.Tensor, logvar: Optional[torch.Tensor]) -> CellStats:
    values = mean[0].float().pow(2).mean(0).sqrt().cpu()
    magnitude = CellMap.of(values, MAGNITUDE_SCALE_FLOOR * float(values.median()))
    severity = magnitude.z
    channel_mean = None
    if logvar is not None:
        channel_mean = CellMap.of(logvar[0].float().mean(0).cpu(), LOGVAR_SCALE_FLOOR)
        severity = torch.maximum(severity, -channel_mean.z)
    return CellStats(magnitude, channel_mean, severity)


def ranked_cells(mask: torch.Tensor, score: torch.Tensor) -> list:
    """(y, x) of the True cells, most severe first."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    order = torch.argsort(score[ys, xs], descending=True)
    return [(int(ys[i]), int(xs[i])) for i in order]


@dataclass(frozen=True)
class Flags:
    threshold: float
    mask: torch.Tensor   # [h, w] bool
    ranked: list         # flagged (y, x), most severe first


def find_flags(stats: CellStats, threshold: float) -> Flags:
    mask = stats.severity >= threshold
    ranked = ranked_cells(mask, stats.severity)
    return Flags(threshold, mask, ranked)


def measured_cells(stats: CellStats, flags: Flags) -> list:
    """The cells whose influence a probe measures: the flagged ones, or with none flagged the most extreme cell."""
    if flags.ranked:
        return flags.ranked
    return [divmod(int(torch.argmax(stats.severity)), stats.shape[1])]


def cell_entry(stats: CellStats, y: int, x: int, downscale: int, offset: tuple, threshold: float,
               grid: Optional[tuple] = None) -> dict:
    """One flagged cell for the report; `grid` (h, w) adds its position relative to the latent."""
    top, left = offset
    magnitude_z = float(stats.magnitude.z[y, x])
    entry = {
        "y": y, "x": x,
        "pixel_box": [top + y * downscale, left + x * downscale, top + (y + 1) * downscale, left + (x + 1) * downscale],
        "magnitude": round(float(stats.magnitude.values[y, x]), 4),
        "magnitude_z": round(magnitude_z, 2),
    }
    reasons = ["magnitude"] if magnitude_z >= threshold else []
    if stats.logvar is not None:
        logvar_z = float(stats.logvar.z[y, x])
        entry["logvar"] = round(float(stats.logvar.values[y, x]), 3)
        entry["logvar_z"] = round(logvar_z, 2)
        if logvar_z <= -threshold:
            reasons.insert(0, "logvar")
    entry["reasons"] = reasons
    if grid is not None:
        entry["relative_position"] = [round((y + 0.5) / grid[0], 4), round((x + 0.5) / grid[1], 4)]
    return entry


def flags_report(stats: CellStats, flags: Flags, downscale: int, offset: tuple = (0, 0), listed: int = MAX_LISTED_CELLS,
                 relative: bool = False) -> dict:
    grid = stats.shape if relative else None
    return {
        "threshold": flags.threshold,
        "count": len(flags.ranked),
        "cells": [cell_entry(stats, y, x, downscale, offset, flags.threshold, grid) for y, x in flags.ranked[:listed]],
    }


def moments_report(stats: CellStats) -> dict:
    summary = {"logvar_read": "before the clamp to [-30, 20]" if stats.logvar is not None else None,
               "magnitude": stats.magnitude.summary()}
    if stats.logvar is not None:
        summary["logvar_channel_mean"] = stats.logvar.summary()
    return summary
