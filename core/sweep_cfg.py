"""Classifier-free guidance with one scale per batch item, for sweeps that sample all cells together.

`guided_prediction` is the body of a guider's predict step: it asks the model once per DISTINCT input
row (cells that share a seed have the same input until their first CFG-dependent update, so their
first evaluation is computed once and shared), skips the unconditional pass for cells whose scale is 1
(as ComfyUI's sampling_function does for a whole batch), and hands per-cell predictions to `combine`.
"""
import math
from typing import Callable

import torch

# evaluate(rows_x, rows_timestep, with_uncond, cells) -> (cond_pred, uncond_pred or None); cells: the cell index of
# each row (a guidance sweep feeds each row its cell's guidance)
Evaluate = Callable[[torch.Tensor, torch.Tensor, bool], tuple]
# combine(cond_pred, uncond_pred, needs_uncond) -> denoised; uncond_pred is zero where needs_uncond is False
Combine = Callable[[torch.Tensor, torch.Tensor, list], torch.Tensor]


def is_unit_scale(scale: float) -> bool:
    """ComfyUI's test for skipping the unconditional pass (math.isclose with default tolerance)."""
    return math.isclose(scale, 1.0)


def needs_uncond(scales: list, skip_unit: bool = True) -> list:
    return [not (skip_unit and is_unit_scale(s)) for s in scales]


def cfg_scale(scales: list, like: torch.Tensor):
    """A float when every cell has the same scale (exactly what KSampler passes), else a [B, 1, 1, 1] tensor."""
    if all(s == scales[0] for s in scales):
        return float(scales[0])
    return torch.tensor(scales, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale) -> torch.Tensor:
    """ComfyUI's CFG arithmetic, with a float or a per-item tensor scale."""
    return uncond + (cond - uncond) * scale


def first_of_group(groups: list) -> list:
    first = {}
    return [first.setdefault(group, index) for index, group in enumerate(groups)]


def distinct_rows(x: torch.Tensor, timestep: torch.Tensor, groups: list) -> tuple:
    """(reps, inverse): rows bitwise equal to their group's first row (same timestep too) share it.

    reps: indices of the rows to evaluate; inverse: for each row, its position in reps.
    """
    first = torch.tensor(first_of_group(groups), device=x.device)
    same = (x == x[first]).flatten(1).all(1)
    if timestep.ndim > 0:
        same &= timestep == timestep[first]
    owner = torch.where(same, first, torch.arange(x.shape[0], device=x.device))
    return torch.unique(owner, return_inverse=True)


def guided_prediction(x: torch.Tensor, timestep: torch.Tensor, scales: list, groups: list,
                      evaluate: Evaluate, combine: Combine, skip_unit: bool = True,
                      stats: dict | None = None) -> torch.Tensor:
    needs = needs_uncond(scales, skip_unit)
    reps, inverse = distinct_rows(x, timestep, groups)
    needs_t = torch.tensor(needs, device=x.device)
    rep_needs = torch.zeros(len(reps), dtype=torch.bool, device=x.device)
    rep_needs[inverse[needs_t]] = True

    cond_rows = uncond_rows = None
    for with_uncond in (True, False):
        picked = torch.nonzero(rep_needs == with_uncond).flatten()
        if len(picked) == 0:
            continue
        rows = reps[picked]
        step = timestep[rows] if timestep.ndim > 0 else timestep
        cond, uncond = evaluate(x[rows], step, with_uncond, rows)
        if cond_rows is None:
            cond_rows = cond.new_zeros((len(reps),) + tuple(cond.shape[1:]))
            uncond_rows = torch.zeros_like(cond_rows)
        cond_rows[picked] = cond
        if with_uncond:
            uncond_rows[picked] = uncond
        _count(stats, with_uncond, len(picked))

    cond = cond_rows[inverse]
    uncond = torch.where(needs_t.view(-1, *([1] * (cond.ndim - 1))), uncond_rows[inverse], 0.0)
    if stats is not None:
        stats["calls"] = stats.get("calls", 0) + 1
        stats["cell_evaluations"] = stats.get("cell_evaluations", 0) + len(scales) + sum(needs)
    return combine(cond, uncond, needs)


def _count(stats: dict | None, with_uncond: bool, rows: int) -> None:
    if stats is None:
        return
    stats["cond_rows"] = stats.get("cond_rows", 0) + rows
    if with_uncond:
        stats["uncond_rows"] = stats.get("uncond_rows", 0) + rows
