"""A procedural calibration image set and flip/crop augmentation, so fitting needs no image input.

Four kinds, cycled: flat color fields, gradients (linear and radial), shapes on a gradient,
and textures (multi-scale value noise, stripes, checkers). Same seed, same images.
"""
import math

import torch
import torch.nn.functional as F

from .errors import require

KINDS = ("flat", "gradient", "shapes", "texture")
CELL = 8  # pixels per latent cell: crops move by less than this to shift the cell grid


def calibration_images(count: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """IMAGE [count, size, size, 3] in 0..1."""
    require(count >= 1, f"The calibration set needs at least 1 image, got {count}.")
    require(size >= 16, f"Calibration images must be at least 16 px, got {size}.")
    generator = torch.Generator().manual_seed(seed)
    makers = (_flat, _gradient, _shapes, _texture)
    images = [makers[i % len(makers)](size, generator) for i in range(count)]
    return torch.stack(images).clamp(0, 1)


def _colors(n: int, generator) -> torch.Tensor:
    """n colors spread over hue, saturation and value: [n, 3]."""
    hue = torch.rand(n, generator=generator)
    saturation = torch.rand(n, generator=generator) ** 0.7
    value = 0.1 + 0.9 * torch.rand(n, generator=generator)
    return _hsv_to_rgb(hue, saturation, value)


def _hsv_to_rgb(h, s, v) -> torch.Tensor:
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return v[:, None] * (1 - s[:, None] * ramp)


def _grid(size: int):
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return torch.meshgrid(axis, axis, indexing="ij")


def _flat(size, generator) -> torch.Tensor:
    return _colors(1, generator)[0].expand(size, size, 3).clone()


def _gradient(size, generator) -> torch.Tensor:
    y, x = _grid(size)
    a, b = _colors(2, generator)
    if torch.rand(1, generator=generator).item() < 0.5:
        angle = torch.rand(1, generator=generator).item() * 2 * math.pi
        t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5
    else:
        cy, cx = torch.rand(2, generator=generator).tolist()
        t = ((y - cy) ** 2 + (x - cx) ** 2).sqrt() * 1.4
    t = t.clamp(0, 1)[..., None]
    return a * (1 - t) + b * t


def _shapes(size, generator) -> torch.Tensor:
    y, x = _grid(size)
    image = _gradient(size, generator)
    for color in _colors(int(torch.randint(3, 9, (1,), generator=generator)), generator):
        cy, cx, r, aspect = torch.rand(4, generator=generator).tolist()
        r = 0.05 + 0.25 * r
        kind = int(torch.randint(0, 3, (1,), generator=generator))
        if kind == 0:
            mask = (y - cy) ** 2 + (x - cx) ** 2 < r * r
        elif kind == 1:
            mask = ((y - cy).abs() < r) & ((x - cx).abs() < r * (0.4 + 1.2 * aspect))
        else:
            mask = ((y - cy).abs() < r) & ((x - cx).abs() < (y - cy + r) * 0.6)
        image = torch.where(mask[..., None], color, image)
    return image


def _texture(size, generator) -> torch.Tensor:
    y, x = _grid(size)
    a, b = _colors(2, generator)
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    if kind == 0:
        t = _value_noise(size, generator)
    else:
        period = 2.0 + 30.0 * torch.rand(1, generator=generator).item()
        angle = torch.rand(1, generator=generator).item() * math.pi
        u = (x * math.cos(angle) + y * math.sin(angle)) * size / period
        if kind == 1:
            t = 0.5 + 0.5 * torch.sin(2 * math.pi * u)
        else:
            v = (-x * math.sin(angle) + y * math.cos(angle)) * size / period
            t = ((u.floor() + v.floor()) % 2).float()
    image = a * (1 - t[..., None]) + b * t[..., None]
    noise = _value_noise(size, generator)[..., None] - 0.5
    return image + 0.3 * noise * torch.rand(1, generator=generator).item()


def _value_noise(size: int, generator) -> torch.Tensor:
    """Sum of upsampled random grids, octaves from 4 to size/2 cells across: [size, size] in 0..1."""
    total = torch.zeros(1, 1, size, size)
    cells, weight, weights = 4, 1.0, 0.0
    while cells <= max(4, size // 2):
        grid = torch.rand(1, 1, cells, cells, generator=generator)
        total += weight * F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
        weights += weight
        cells, weight = cells * 2, weight * 0.6
    return (total / weights)[0, 0]


def crop_to_cells(images: torch.Tensor) -> torch.Tensor:
    """Crop IMAGE [B, H, W, 3] to whole latent cells, centered, as ComfyUI's VAE encode does."""
    height, width = (images.shape[1] // CELL) * CELL, (images.shape[2] // CELL) * CELL
    top, left = (images.shape[1] % CELL) // 2, (images.shape[2] % CELL) // 2
    return images[:, top:top + height, left:left + width]


def augment(images: torch.Tensor, views: int, seed: int = 0) -> torch.Tensor:
    """IMAGE [B, H, W, 3] -> [B * views, H', W', 3], item-major (all views of image 0 first).

    View 0 is the image itself; the others are flipped (horizontal, vertical, then random) and cropped at a
    random offset of 0-7 px, so latent cells straddle different pixels. All views share one size, whole cells.
    """
    require(views >= 1, f"augment views must be at least 1, got {views}.")
    if views == 1:
        return crop_to_cells(images)
    height, width = ((images.shape[1] - CELL) // CELL) * CELL, ((images.shape[2] - CELL) // CELL) * CELL
    require(height >= CELL and width >= CELL,
            f"Images of {images.shape[2]}x{images.shape[1]} px are too small to augment.",
            "Use images of at least 32x32 px, or set augment views to 1.")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for image in images:
        for view in range(views):
            flips = [(), (1,), (0,)][view] if view < 3 else \
                [d for d in (1, 0) if torch.randint(0, 2, (1,), generator=generator).item()]
            top = 0 if view == 0 else int(torch.randint(0, images.shape[1] - height + 1, (1,), generator=generator))
            left = 0 if view == 0 else int(torch.randint(0, images.shape[2] - width + 1, (1,), generator=generator))
            flipped = image.flip(list(flips)) if flips else image
            out.append(flipped[top:top + height, left:left + width])
    return torch.stack(out)
