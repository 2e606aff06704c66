"""The probe's report: what one run found, written out once as plain JSON-ready dicts, and its one-line verdict.

Report keys: version, verdict, image, latent, vae, moments, flags, influence, resolutions, notes. Latent Spot
Repair reads `latent.shape` and `flags.cells` back from the JSON.
"""
import math
from dataclasses import dataclass
from typing import Optional

from .probe_far_field import BACKWARD_PASSES

REPORT_VERSION = 2
REPORT_KEYS = ("version", "verdict", "image", "latent", "vae", "moments", "flags", "influence", "resolutions", "notes")
INFLUENCE_UNITS = "RMS change of a far-field pixel value (0..1) per unit latent change of the cell"
VERIFY_BASELINE = "median over sampled groups of ordinary cells (each group: mean far-field energy per cell)"


@dataclass(frozen=True)
class InfluenceReport:
    """What one influence mode measured. `median` is the ratios' baseline: the median cell (map, brute) or the
    median sampled group of ordinary cells (verify)."""
    mode: str
    radius: int
    budget: float
    median: float
    cells: list                        # the flagged cells (or the most extreme one): y, x, flagged, influence, ratio
    passes: float = 0.0                # decoder-equivalent passes spent
    seconds: float = 0.0
    top: Optional[list] = None         # map, brute: the most influential cells
    estimator: Optional[dict] = None   # map: bands used
    samples: Optional[list] = None     # verify: the sampled groups of ordinary cells
    unmeasured: Optional[list] = None  # verify: candidates the decode budget left out

    def as_dict(self) -> dict:
        out = {"mode": self.mode, "radius": self.radius, "units": INFLUENCE_UNITS, "backward_pass_cost": BACKWARD_PASSES,
               "budget": self.budget}
        if self.estimator is not None:
            out["estimator"] = self.estimator
        out["median"] = self.median
        if self.samples is not None:
            out["baseline"] = VERIFY_BASELINE
        if self.top is not None:
            out["top"] = self.top
        out["cells"] = self.cells
        if self.samples is not None:
            out["samples"] = self.samples
            out["unmeasured"] = self.unmeasured
        out["decoder_equivalent_passes"] = round(self.passes, 2)
        out["wall_seconds"] = round(self.seconds, 3)
        return out


@dataclass(frozen=True)
class ProbeReport:
    input_size: list      # [H, W] of the IMAGE
    probed_size: list     # [H, W] after the crop to whole cells
    crop_offset: list     # [top, left]
    image_index: int
    latent_shape: list    # [C, h, w]
    downscale: int
    vae_name: str
    has_logvar: bool
    moments: dict
    flags: dict
    influence: InfluenceReport
    resolutions: list     # one row per resolution-scan size
    notes: list

    def as_dict(self) -> dict:
        influence = self.influence.as_dict()
        return {
            "version": REPORT_VERSION,
            "image": {"input_size": self.input_size, "probed_size": self.probed_size, "crop_offset": self.crop_offset,
                      "image_index": self.image_index},
            "latent": {"shape": self.latent_shape, "downscale": self.downscale},
            "vae": {"name": self.vae_name, "has_logvar": self.has_logvar},
            "moments": self.moments,
            "flags": self.flags,
            "influence": influence,
            "resolutions": self.resolutions,
            "notes": self.notes,
            "verdict": verdict(self.flags, self.influence.cells),
        }


def ratio_text(ratio) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "not measured"
    return f"{ratio:.3g}x median" if ratio < 1000 else f"{ratio:.2e}x median"


def verdict(flags: dict, measured: list) -> str:
    """One line from the flags and the measured cells' influence rows."""
    by_cell = {(c["y"], c["x"]): c.get("ratio") for c in measured}
    if flags["count"] == 0:
        cell = measured[0] if measured else None
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


def resolution_row(height: int, width: int, stats, flags_out: dict) -> dict:
    """One resolution-scan size: its flags (cells with their position relative to the latent) and extremes."""
    row = {"size": [height, width], "latent": list(stats.shape), "flag_count": flags_out["count"],
           "cells": flags_out["cells"], "max_magnitude_z": round(float(stats.magnitude.z.max()), 2)}
    if stats.logvar is not None:
        row["min_logvar"] = round(float(stats.logvar.values.min()), 3)
        row["min_logvar_z"] = round(float(stats.logvar.z.min()), 2)
    return row
