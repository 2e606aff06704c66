"""Linear latent -> RGB previews."""
import torch
import torch.nn.functional as F

from .errors import require
from .formats import RgbAffine

RESAMPLE_MODES = ("nearest", "bilinear")


def linear_rgb(raw: torch.Tensor, affine: RgbAffine, clamp: bool = True) -> torch.Tensor:
    """[B, C, H, W] raw latent -> [B, 3, H, W] RGB in [0, 1]."""
    require(raw.shape[1] == affine.channels,
            f"The latent has {raw.shape[1]} channels but the factors '{affine.label}' expect {affine.channels}.",
            "Pick factors made for this latent's format, or fit a factor file for its VAE.")
    weight = affine.weight.to(raw.device, raw.dtype)
    bias = affine.bias.to(raw.device, raw.dtype)
    rgb = torch.einsum("bchw,ck->bkhw", raw, weight) + bias.view(1, 3, 1, 1)
    return rgb.clamp_(0, 1) if clamp else rgb


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
    rgb = upscale(linear_rgb(raw.float(), affine), factor, mode)
    return rgb.permute(0, 2, 3, 1).contiguous()


def mean_color(raw: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    """Mean RGB of each item's unclamped linear preview: [B, 3]. Linear, so it equals preview(mean latent)."""
    channel_means = raw.float().mean(dim=(2, 3))
    return channel_means @ affine.weight.to(raw.device) + affine.bias.to(raw.device)
