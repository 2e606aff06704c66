"""Test doubles of ComfyUI objects (not of our code): small torch VAEs with ComfyUI's VAE interface.

ComfyUI's VAE: encode(IMAGE [B, H, W, 3] in 0..1) -> raw latent [B, C, H/8, W/8];
decode(raw latent) -> IMAGE [B, H, W, 3]; attribute latent_channels.
"""
import torch
import torch.nn.functional as F


class LinearVAE:
    """A VAE whose decoder is exactly linear per latent cell: pixel = z @ weight + bias, upsampled x8.

    Its encoder is nonlinear enough (a squared-luminance channel) that latents span all four channels,
    so least squares has one answer: the decoder's own weight and bias.
    """
    latent_channels = 4

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(4, 3, generator=generator) * 0.04
        self.bias = torch.rand(3, generator=generator) * 0.2 + 0.4
        self.mix = torch.randn(3, 3, generator=generator)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(images.movedim(-1, 1).float(), 8)
        colors = torch.einsum("bchw,ck->bkhw", pooled, self.mix)
        luminance = pooled.mean(dim=1, keepdim=True)
        return torch.cat([colors, 4 * luminance ** 2 - 1], dim=1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bchw,ck->bkhw", latents.float(), self.weight) + self.bias.view(1, 3, 1, 1)
        # Small weights keep values inside 0..1, so ComfyUI's clamp on decode never bites and the map stays linear.
        return F.interpolate(rgb, scale_factor=8, mode="nearest").movedim(1, -1).clamp(0, 1)


def varied_images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random color fields with some noise: IMAGE [count, size, size, 3]."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(count):
        a, b, c = torch.rand(3, 3, generator=generator)
        field = a[:, None, None] * x + b[:, None, None] * y + c[:, None, None] * (x * y)
        field = field / field.amax().clamp(min=1e-6)
        images.append((field + 0.05 * torch.randn(3, size, size, generator=generator)).clamp(0, 1))
    return torch.stack(images).movedim(1, -1).contiguous()
