"""Linear latent -> RGB previews."""
import torch
import torch.nn.functional as F

from .errors import require
from .formats import RgbAffine
from .precision import wide_dtype
from .validate import all_finite

RESAMPLE_MODES = ("nearest", "bilinear")


def linear_rgb(raw: torch.Tensor, affine: RgbAffine, clamp: bool = True) -> torch.Tensor:
    """[B, C, H, W] raw latent -> [B, 3, H * block_h, W * block_w] RGB in [0, 1] (block: see RgbAffine), float32."""
    rgb = _unclamped_rgb(raw, affine)
    return (rgb.clamp_(0, 1) if clamp else rgb).float()


def _unclamped_rgb(raw: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    require(raw.shape[1] == affine.channels,
            f"The latent has {raw.shape[1]} channels but the factors '{affine.label}' expect {affine.channels}.",
            "Pick factors made for this latent's format, or fit a factor file for its VAE.")
    rgb = _affine_rgb(raw.float(), affine)
    if not all_finite(rgb):  # float32 sums of huge values overflow (or raw holds NaN): the same sums, wider
        rgb = _affine_rgb(raw.to(wide_dtype(raw.device)), affine)
    return rgb


def _affine_rgb(raw: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    """A fresh [B, 3, H', W'] tensor (the callers write it in place)."""
    weight = affine.weight.to(raw.device, raw.dtype)
    bias = affine.bias.to(raw.device, raw.dtype)
    batch, _, height, width = raw.shape
    if not affine.blocked:
        # one matrix product per frame over contiguous pixel rows: faster than einsum's channels-last layout
        cells = raw.reshape(batch, raw.shape[1], height * width)
        rgb = torch.baddbmm(bias.view(1, 3, 1), weight.T.expand(batch, 3, raw.shape[1]), cells)
        return rgb.view(batch, 3, height, width)
    block_h, block_w = affine.block
    subpixels = torch.einsum("bchw,sck->bskhw", raw, weight) + bias.view(1, -1, 3, 1, 1)
    subpixels = subpixels.view(batch, block_h, block_w, 3, height, width).permute(0, 3, 4, 1, 5, 2)
    return subpixels.reshape(batch, 3, height * block_h, width * block_w)


def frames_of(raw: torch.Tensor, stride: int = 1, limit: int = 0) -> torch.Tensor:
    """[B, C, T, H, W] -> [B * T', C, H, W], item-major (every kept frame of item 0, then of item 1...): every
    `stride`-th frame, at most `limit` of them per item (0: all). A 4-D latent comes back as it is."""
    if raw.ndim == 4:
        return raw
    require(raw.ndim == 5, f"Expected a latent [B, C, H, W] or [B, C, T, H, W]; got shape {tuple(raw.shape)}.")
    require(stride >= 1 and limit >= 0, f"frame_stride {stride} and frame_limit {limit} must be >= 1 and >= 0.",
            "Use stride 1 for every frame and limit 0 for no limit.")
    kept = raw[:, :, ::stride]
    if limit:
        kept = kept[:, :, :limit]
    return kept.movedim(2, 1).reshape(-1, raw.shape[1], *raw.shape[3:])


def upscale(images: torch.Tensor, factor: int, mode: str = "nearest") -> torch.Tensor:
    """[B, K, H, W] -> [B, K, H*factor, W*factor]."""
    require(mode in RESAMPLE_MODES, f"Unknown resample mode '{mode}'.", f"Use one of {RESAMPLE_MODES}.")
    if factor == 1:
        return images
    if mode == "nearest":
        return F.interpolate(images, scale_factor=factor, mode="nearest")
    return F.interpolate(images, scale_factor=factor, mode="bilinear", align_corners=False).clamp_(0, 1)


def pick_frame(x: torch.Tensor, frame: int) -> torch.Tensor:
    """[B, C, T, H, W] -> frame `frame` of every item, [B, C, H, W]."""
    frames = x.shape[2]
    require(0 <= frame < frames, f"Frame {frame} does not exist: the video latent has {frames} frames (0..{frames - 1}).",
            f"Set frame to 0..{frames - 1}.")
    return x[:, :, frame]


def preview_images(raw: torch.Tensor, affine: RgbAffine, factor: int = 1, mode: str = "nearest",
                   frame_stride: int = 1, frame_limit: int = 0) -> torch.Tensor:
    """Raw latent -> ComfyUI IMAGE [N, H*factor, W*factor, 3] (H, W: of linear_rgb): every batch item, and for a
    video latent every kept frame of every item, item-major (see frames_of)."""
    require(mode in RESAMPLE_MODES, f"Unknown resample mode '{mode}'.", f"Use one of {RESAMPLE_MODES}.")
    rgb = _unclamped_rgb(frames_of(raw, frame_stride, frame_limit), affine)
    if factor == 1:  # clamped straight into the IMAGE layout: one pass
        pixels = rgb.permute(0, 2, 3, 1)
        return torch.clamp(pixels, 0, 1, out=torch.empty(pixels.shape, dtype=torch.float32, device=rgb.device))
    rgb = rgb.clamp_(0, 1).float()
    if mode == "bilinear":
        return upscale(rgb, factor, mode).permute(0, 2, 3, 1).contiguous()
    return _repeat_cells(rgb.permute(0, 2, 3, 1), factor)


def _repeat_cells(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H, W, 3] -> contiguous [B, H*factor, W*factor, 3], each pixel a factor x factor block, written once."""
    batch, height, width, _ = pixels.shape
    blocks = pixels[:, :, None, :, None, :].expand(batch, height, factor, width, factor, 3)
    return blocks.reshape(batch, height * factor, width * factor, 3)


def mean_color(raw: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    """Mean RGB of each item's unclamped linear preview (over every frame of a video): [B, 3] float32. Linear, so it equals preview(mean latent).
    Summed in float64, so only a color beyond the float32 range (of a latent near it) comes out as ±inf."""
    wide = wide_dtype(raw.device)
    channel_means = raw.flatten(2).mean(dim=2, dtype=wide)
    weight, bias = affine.mean_map()
    return (channel_means @ weight.to(raw.device, wide) + bias.to(raw.device, wide)).float()
