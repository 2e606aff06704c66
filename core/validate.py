"""Checks shared by every node that takes a latent or an image."""
import torch

from .errors import require


def check_latent(samples, finite: bool = True, video: bool = False) -> torch.Tensor:
    """finite=False leaves the NaN/inf scan to the caller (an operation that finds them in its own reduction).
    video=True also accepts [batch, channels, frames, height, width]."""
    require(isinstance(samples, torch.Tensor),
            f"LATENT['samples'] must be a tensor, got {type(samples).__name__}.",
            "Connect a LATENT output (Empty Latent Image, VAE Encode, KSampler...).")
    if video:
        require(samples.ndim in (4, 5),
                f"LATENT must be [batch, channels, height, width] or [batch, channels, frames, height, width]; got "
                f"{samples.ndim} dimensions {tuple(samples.shape)}.", "Pass an image or video latent.")
    else:
        require(samples.ndim == 4,
                f"LATENT must be [batch, channels, height, width]; got {samples.ndim} dimensions "
                f"{tuple(samples.shape)}.", "Video latents (5-D) are not supported here; pass image latents.")
    require(all(size >= 1 for size in samples.shape),
            f"LATENT is empty: shape {tuple(samples.shape)}.",
            "Every dimension must be at least 1.")
    require(samples.is_floating_point(), f"LATENT must hold floats, got {samples.dtype}.")
    if finite:
        check_finite(samples, "LATENT")
    return samples


def check_image(images) -> torch.Tensor:
    require(isinstance(images, torch.Tensor),
            f"IMAGE must be a tensor, got {type(images).__name__}.", "Connect an IMAGE output.")
    require(images.ndim == 4,
            f"IMAGE must be [batch, height, width, channels]; got shape {tuple(images.shape)}.",
            "Connect an IMAGE output (Load Image, VAE Decode...); a MASK or LATENT has another shape.")
    batch, height, width, channels = images.shape
    require(batch >= 1 and height >= 1 and width >= 1, f"IMAGE is empty: shape {tuple(images.shape)}.",
            "Connect an IMAGE with at least one picture (Load Image, VAE Decode...); a node upstream filtered "
            "every image out." if batch == 0 else "Connect an IMAGE of at least 1x1 pixels.")
    require(channels == 3,
            f"IMAGE has {channels} channels; RGB (3) is needed.",
            "Drop the alpha channel first (for example with an 'Image RGB' or 'Split Image with Alpha' node).")
    check_finite(images, "IMAGE")
    return images


def all_finite(tensor: torch.Tensor) -> bool:
    # One reduction answers the common case: a sum is finite only if every term is (or it overflowed).
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def check_finite(tensor: torch.Tensor, what: str) -> None:
    if all_finite(tensor):
        return
    bad = (~torch.isfinite(tensor)).sum().item()
    require(bad == 0,
            f"{what} contains {bad} NaN or infinite values.",
            "Fix the node that produced it (an fp16 VAE overflow or an extreme CFG are common causes).")


def excerpt(value, most: int = 40) -> str:
    """A value for a message: text stripped and cut to its start and end around an ellipsis when longer than
    `most`; a number by its repr (a huge int by its size: str() refuses over 4300 digits); anything else by its
    type (the repr of a deeply nested list would recurse)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * most:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, str):
        text = value.strip()
    elif value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
    else:
        size = f" of {len(value)}" if isinstance(value, (list, tuple, dict)) else ""
        return f"a {type(value).__name__}{size}"
    if len(text) <= most:
        return text
    tail = most // 4
    return f"{text[:most - tail - 1]}…{text[-tail:]}"
