"""Direct computations from a ComfyUI-style latent format's parts (factors, bias, reshape, process_in/process_out),
written without the pack's code, and format classes shaped like ComfyUI's (test doubles of ComfyUI objects).
Shared by the unit tests and the in-process integration test."""
import torch


def as_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B * T, C, H, W], item after item; [B, C, H, W] as it is."""
    if x.ndim == 4:
        return x
    return torch.stack([x[b, :, t] for b in range(x.shape[0]) for t in range(x.shape[2])])


def preview(raw: torch.Tensor, fmt, clamp: bool = True) -> torch.Tensor:
    """IMAGE [N, H', W', 3] of a ComfyUI format instance `fmt`: process_in, reshape, factors, (v + 1) / 2."""
    scaled = as_frames(fmt.process_in(raw.double()))
    reshape = getattr(fmt, "latent_rgb_factors_reshape", None)
    if reshape is not None:
        scaled = reshape(scaled)
    weights = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float64)
    bias = getattr(fmt, "latent_rgb_factors_bias", None)
    rgb = torch.einsum("nchw,ck->nhwk", scaled, weights)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float64)
    rgb = (rgb + 1) / 2
    return rgb.clamp(0, 1) if clamp else rgb


def mean_color(raw: torch.Tensor, fmt) -> torch.Tensor:
    """[B, 3]: each item's mean unclamped preview color over all its frames."""
    frames = preview(raw, fmt, clamp=False)
    per_item = frames.shape[0] // raw.shape[0]
    return frames.reshape(raw.shape[0], per_item, -1, 3).mean(dim=(1, 2))


def reduce_dims(x: torch.Tensor) -> tuple:
    return tuple(range(2, x.ndim))


def center(scaled: torch.Tensor) -> torch.Tensor:
    """Every channel's mean removed, per item (full strength, no global step)."""
    return scaled - scaled.mean(dim=reduce_dims(scaled), keepdim=True)


def soft_clamp(scaled: torch.Tensor, threshold: float, boundary: float, mode: str = "pixel") -> torch.Tensor:
    """The blog's soft clamp, each side mapped from [t, max(M, b)] onto [t, b]; M is the largest value across
    channels at each pixel (pixel mode) or of each channel over the item (channel mode)."""
    over = (1,) if mode == "pixel" else tuple(range(2, scaled.ndim))
    top = scaled.amax(dim=over, keepdim=True).clamp(min=boundary)
    bottom = (-scaled).amax(dim=over, keepdim=True).clamp(min=boundary)
    upper = threshold + (scaled - threshold) * (boundary - threshold) / (top - threshold)
    lower = -threshold + (scaled + threshold) * (boundary - threshold) / (bottom - threshold)
    return torch.where(scaled > threshold, upper, torch.where(scaled < -threshold, lower, scaled))


def maximize(scaled: torch.Tensor, boundary: float, channels: list) -> torch.Tensor:
    out = scaled.clone()
    for item in range(scaled.shape[0]):
        peak = scaled[item, channels].abs().max()
        out[item, channels] = scaled[item, channels] * boundary / peak
    return out


class ComfyStyleFormat:
    """Shaped like a comfy.latent_formats class: latent_channels, latent_dimensions, latent_rgb_factors(_bias,
    _reshape) and process_in/process_out, here (x - mean) * scale / std per channel."""

    def __init__(self, channels: int, dimensions: int, seed: int = 0, per_channel: bool = True,
                 spread: int = 1, with_bias: bool = True):
        generator = torch.Generator().manual_seed(seed)
        self.latent_channels = channels
        self.latent_dimensions = dimensions
        rows = channels // (spread * spread)
        self.latent_rgb_factors = (torch.randn(rows, 3, generator=generator) * 0.3).tolist()
        self.latent_rgb_factors_bias = (torch.randn(3, generator=generator) * 0.1).tolist() if with_bias else None
        self.latent_rgb_factors_reshape = (lambda t: torch.nn.functional.pixel_shuffle(t, spread)) \
            if spread > 1 else None
        self.scale_factor = 0.5
        shape = (1, channels) + (1,) * dimensions
        if per_channel:
            self.latents_mean = (torch.randn(channels, generator=generator) * 0.5).view(shape)
            self.latents_std = (torch.rand(channels, generator=generator) + 0.5).view(shape)
        else:
            self.latents_mean = torch.full(shape, 0.25)
            self.latents_std = torch.full(shape, 2.0)

    def process_in(self, latent):
        mean, std = self.latents_mean.to(latent), self.latents_std.to(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent):
        mean, std = self.latents_mean.to(latent), self.latents_std.to(latent)
        return latent * std / self.scale_factor + mean
