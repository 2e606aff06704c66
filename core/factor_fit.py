"""Least-squares fit of linear latent -> RGB factors, and their quality."""
import math

import torch
import torch.nn.functional as F

from .errors import require
from .formats import RgbAffine


def area_average(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE [B, H, W, 3] -> [B, 3, height, width] by area averaging."""
    return F.adaptive_avg_pool2d(images.permute(0, 3, 1, 2).float(), (height, width))


def pixels_and_targets(latents: torch.Tensor, targets: torch.Tensor):
    """[B, C, h, w] latents and [B, 3, h, w] targets -> rows [N, C] and [N, 3]."""
    return latents.double().permute(0, 2, 3, 1).flatten(0, 2), targets.double().permute(0, 2, 3, 1).flatten(0, 2)


def solve_affine(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-8) -> RgbAffine:
    """Least squares y ≈ x @ W + b with a tiny ridge so a degenerate latent set still solves."""
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    gram = design.T @ design
    gram += ridge * torch.eye(gram.shape[0], dtype=gram.dtype) * gram.diagonal().mean()
    solution = torch.linalg.solve(gram, design.T @ y)
    return RgbAffine(solution[:-1].float(), solution[-1].float(), "fitted")


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB for values in [0, 1]; inf for an exact match."""
    mse = (prediction.double().clamp(0, 1) - target.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def held_out_split(batch: int, height: int, width: int, fraction: float = 0.2, seed: int = 0):
    """Hold out whole images when there are several, else a random fifth of the cells. Returns masks [B, h, w]."""
    held = torch.zeros(batch, height, width, dtype=torch.bool)
    if batch >= 2:
        count = max(1, round(batch * fraction))
        held[batch - count:] = True
    else:
        generator = torch.Generator().manual_seed(seed)
        held = torch.rand(batch, height, width, generator=generator) < fraction
    return ~held, held


def fit_factors(latents: torch.Tensor, targets: torch.Tensor) -> tuple[RgbAffine, dict]:
    """Fit on the training split, report PSNR on train and held-out cells, then refit on everything."""
    batch, channels, height, width = latents.shape
    require(height * width * batch >= 4 * (channels + 1),
            f"Too few latent cells ({batch * height * width}) to fit {channels + 1} coefficients per color.",
            "Feed larger or more images (at least 64x64 pixels each).")
    train, held = held_out_split(batch, height, width)
    x, y = pixels_and_targets(latents, targets)
    train_rows, held_rows = train.flatten(), held.flatten()
    trial = solve_affine(x[train_rows], y[train_rows])
    predict = lambda affine, rows: x[rows] @ affine.weight.double() + affine.bias.double()
    final = solve_affine(x, y)
    report = {
        "train_psnr_db": psnr(predict(trial, train_rows), y[train_rows]),
        "held_out_psnr_db": psnr(predict(trial, held_rows), y[held_rows]),
        "all_psnr_db": psnr(predict(final, slice(None)), y),
        "rms_error": (predict(final, slice(None)) - y).pow(2).mean().sqrt().item(),
        "cells": int(x.shape[0]),
        "held_out_cells": int(held_rows.sum()),
        "images": batch,
    }
    return final, report
