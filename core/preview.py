"""Linear latent -> RGB previews."""
import torch
import torch.nn.functional as F

from .errors import require
from .formats import RgbAffine
from .precision import wide_dtype
from .validate import all_finite

RESAMPLE_MODES = ("nearest", "bilinear")


def linear_rgb(raw: torch.Tensor, affine: RgbAffine, clamp: bool = True) -> torch.Tensor:
    """[B, C, H, W] raw latent -> [B, 3, H, W] RGB in [0, 1]."""
    require(raw.shape[1] == affine.channels,
            f"The latent has {raw.shape[1]} channels but the factors '{affine.label}' expect {affine.channels}.",
            "Pick factors made for this latent's format, or fit a factor file for its VAE.")
    rgb = _affine_rgb(raw.float(), affine)
    if not all_finite(rgb):  # float32 sums of huge values overflow (or raw holds NaN): the same sums, wider
        rgb = _affine_rgb(raw.to(wide_dtype(raw.device)), affine)
    return (rgb.clamp(0, 1) if clamp else rgb).float()


def _affine_rgb(raw: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    weight = affine.weight.to(raw.device, raw.dtype)
    bias = affine.bias.to(raw.device, raw.dtype)
    return torch.einsum("bchw,ck->bkhw", raw, weight) + bias.view(1, 3, 1, 1)


def upscale(images: torch.Tensor, factor: int, mode: str = "nearest") -> torch.Tensor:
    """[B, K, H, W] -> [B, K, H*factor, W*factor]."""
    require(mode in RESAMPLE_MODES, f"Unknown resample mode '{mode}'.", f"Use one of {RESAMPLE_MODES}.")
    if factor == 1:
        return images
    if mode == "nearest":
        return F.interpolate(images, scale_factor=factor, mode="nearest")
    return F.interpolate(images, scale_factor=factor, mode="bilinear", align_corners=False).clamp_(0, 1)


def preview_images(raw: torch.Tensor, affine: RgbAffine, factor: int = 1, mode: str = "nearest") -> torch.Tensor:
    """Raw latent -> ComfyUI IMAGE [B, H*factor, W*factor, 3], every batch item."""
    rgb = upscale(linear_rgb(raw, affine), factor, mode)
    return rgb.permute(0, 2, 3, 1).contiguous()


def mean_color(raw: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    """Mean RGB of each item's unclamped linear preview: [B, 3] float32. Linear, so it equals preview(mean latent).
    Summed in float64, so only a color beyond the float32 range (of a latent near it) comes out as ±inf."""
    wide = wide_dtype(raw.device)
    channel_means = raw.mean(dim=(2, 3), dtype=wide)
    return (channel_means @ affine.weight.to(raw.device, wide) + affine.bias.to(raw.device, wide)).float()
