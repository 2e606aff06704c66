"""Synthetic VAEs for the anomaly probe: tiny conv nets laid out like ComfyUI's AutoencoderKL.

The encoder (patch conv + 3x3 conv) gives a mean and a log-variance per 8x8 pixel cell. A flawed one
plants, at a cell chosen from the image content, a mean of large magnitude that carries the image's
global color, and a log-variance far below the rest (-40: below ComfyUI's -30 clamp).
The decoder is local (a 3x3 conv over cells, then 8x8 pixels per cell) plus an attention-like global path: a softmax over
cells of beta * |z|^2 pools the latent, and a function of the pooled vector is added to every pixel
(patterned=True: through a fixed spatial pattern, as a normalization layer's statistics would). In
the flawed VAE the planted cell wins that softmax, so its value changes the whole image; in a healthy
one the weights spread over the cells.

ComfyVAE wraps the model with the attributes and methods of ComfyUI's comfy.sd.VAE that the adapter uses.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

CHANNELS = 4
DOWNSCALE = 8
PLANTED_LOGVAR = -40.0


def seeded(module: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            fan_in = param[0].numel() if param.ndim > 1 else 1
            param.copy_(torch.randn(param.shape, generator=generator) * gain / math.sqrt(fan_in))
    return module


class DiagonalGaussianRegularizer(torch.nn.Module):
    """Same name and behaviour as ComfyUI's: clamp logvar to [-30, 20], return the mean."""

    def forward(self, z):
        mean, logvar = z.chunk(2, dim=1)
        return mean, {"logvar": logvar.clamp(-30.0, 20.0)}


class Encoder(torch.nn.Module):
    def __init__(self, flawed: bool, seed: int):
        super().__init__()
        self.flawed = flawed
        self.patch = seeded(torch.nn.Conv2d(3, 16, DOWNSCALE, stride=DOWNSCALE), seed, 2.0)
        self.mix = seeded(torch.nn.Conv2d(16, 2 * CHANNELS, 3, padding=1), seed + 1)
        self.site_weights = torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(seed + 2)))
        self.carrier = seeded(torch.nn.Linear(3, CHANNELS), seed + 3, 3.0)

    def site(self, x: torch.Tensor) -> tuple:
        """The planted cell: where a fixed color score of the 8x8-pooled image peaks (content-dependent)."""
        pooled = F.avg_pool2d(x[:1], DOWNSCALE)[0]
        score = torch.einsum("chw,c->hw", pooled, self.site_weights)
        index = int(torch.argmax(score))
        return divmod(index, score.shape[1])

    def forward(self, x):
        h = self.mix(F.silu(self.patch(x)))
        mean = 1.5 * torch.tanh(h[:, :CHANNELS])
        logvar = -6.0 + 0.8 * torch.tanh(h[:, CHANNELS:])
        if self.flawed:
            mean, logvar = mean.clone(), logvar.clone()
            for b in range(x.shape[0]):
                y, x_ = self.site(x[b:b + 1])
                carrier = torch.tanh(self.carrier(x[b].mean((1, 2))))
                mean[b, :, y, x_] = 5.0 * F.normalize(carrier + 0.3, dim=0) * math.sqrt(CHANNELS)
                logvar[b, :, y, x_] = PLANTED_LOGVAR
        return torch.cat([mean, logvar], 1)


class Decoder(torch.nn.Module):
    def __init__(self, seed: int, beta: float = 0.1, patterned: bool = False):
        super().__init__()
        self.beta = beta
        self.local = torch.nn.Sequential(seeded(torch.nn.Conv2d(CHANNELS, 16, 3, padding=1), seed + 10), torch.nn.SiLU(),
                                         seeded(torch.nn.Conv2d(16, 3 * DOWNSCALE ** 2, 1), seed + 11, 0.5),
                                         torch.nn.PixelShuffle(DOWNSCALE))
        self.globe = seeded(torch.nn.Linear(CHANNELS, 3), seed + 13, 0.4)
        self.patterned = patterned

    def forward(self, z):
        weights = torch.softmax(self.beta * z.pow(2).sum(1).flatten(1), dim=1)
        pooled = torch.einsum("bn,bcn->bc", weights, z.flatten(2))
        shift = 0.5 * torch.tanh(self.globe(pooled))[:, :, None, None]
        if self.patterned:  # the global term reaches pixels through a fixed spatial pattern, not uniformly
            height, width = z.shape[2] * DOWNSCALE, z.shape[3] * DOWNSCALE
            y, x = torch.meshgrid(torch.linspace(0, 6, height), torch.linspace(0, 6, width), indexing="ij")
            shift = shift * (1.0 + 0.8 * torch.sin(y + 2 * x) * torch.cos(1.5 * y - x)).to(z)
        out = self.local(z) + shift
        return out


class AutoencoderKL(torch.nn.Module):
    """Laid out like ComfyUI's: encoder -> quant_conv -> regularization; post_quant_conv -> decoder."""

    def __init__(self, flawed: bool = True, seed: int = 0, beta: float = 0.1, patterned: bool = False):
        super().__init__()
        self.encoder = Encoder(flawed, seed)
        self.decoder = Decoder(seed, beta, patterned)
        self.quant_conv = torch.nn.Conv2d(2 * CHANNELS, 2 * CHANNELS, 1)
        self.post_quant_conv = torch.nn.Conv2d(CHANNELS, CHANNELS, 1)
        with torch.no_grad():
            for conv in (self.quant_conv, self.post_quant_conv):
                conv.weight.copy_(torch.eye(conv.weight.shape[0])[:, :, None, None])
                conv.bias.zero_()
        self.regularization = DiagonalGaussianRegularizer()

    def raw_moments(self, x: torch.Tensor) -> tuple:
        """Mean and logvar before the clamp, from pixels in [-1, 1]."""
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)

    def encode(self, x):
        return self.regularization(self.quant_conv(self.encoder(x)))[0]

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))

    def planted_cell(self, pixels01: torch.Tensor) -> tuple:
        """Ground truth for tests: the planted cell of pixels [1, 3, H, W] in 0..1."""
        return self.encoder.site(pixels01 * 2 - 1)


def plain_callables(model: AutoencoderKL, with_logvar: bool = True, precise: bool = True) -> dict:
    """encode_moments / decode as the core probe takes them (0..1 pixels, unclamped decode).

    precise: decode in float64, so finite differences of the brute-force reference are not rounding noise.
    """
    decoder = copy.deepcopy(model).double() if precise else model

    def encode_moments(pixels):
        with torch.no_grad():
            mean, logvar = model.raw_moments(pixels * 2 - 1)
        return mean, (logvar if with_logvar else None)

    def decode(latent):
        return (decoder.decode(latent.to(next(decoder.parameters()).dtype)) + 1) / 2
    return {"encode_moments": encode_moments, "decode": decode}


class ModelPatcher:
    def __init__(self, model):
        self.model = model


class ComfyVAE:
    """The parts of comfy.sd.VAE the adapter reads, over a synthetic AutoencoderKL."""

    def __init__(self, model: AutoencoderKL, latent_dim: int = 2):
        self.first_stage_model = model.eval()
        self.patcher = ModelPatcher(model)
        self.device = torch.device("cpu")
        self.vae_dtype = torch.float32
        self.latent_channels = CHANNELS
        self.latent_dim = latent_dim
        self.output_channels = 3
        self.downscale_ratio = DOWNSCALE
        self.upscale_ratio = DOWNSCALE
        self.disable_offload = False
        self.memory_used_encode = lambda shape, dtype: 1767 * shape[2] * shape[3] * 4
        self.memory_used_decode = lambda shape, dtype: 2178 * shape[2] * shape[3] * 64 * 4
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)

    def throw_exception_if_invalid(self):
        pass

    def spacial_compression_encode(self):
        return self.downscale_ratio

    def encode(self, pixels):
        pixels = pixels[:, :pixels.shape[1] // 8 * 8, :pixels.shape[2] // 8 * 8]
        return self.first_stage_model.encode(self.process_input(pixels.movedim(-1, 1)))

    def decode(self, latent):
        return self.process_output(self.first_stage_model.decode(latent)).movedim(1, -1)


def images_over_sizes(count: int, seed: int):
    """`count` single random images, cycling through a few sizes (square, portrait, landscape, odd)."""
    sizes = [(64, 64), (96, 128), (128, 96), (80, 112), (128, 128)]
    for i in range(count):
        yield random_images(1, sizes[i % len(sizes)], seed=seed + i)


def random_images(count: int, size=64, seed: int = 0) -> torch.Tensor:
    """IMAGE [count, H, W, 3]: smooth color fields with a few soft blobs and some noise."""
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    images = []
    for _ in range(count):
        a, b, c = torch.rand(3, 3, 1, 1, generator=generator)
        field = a * x + b * y + c * 0.5
        for _ in range(3):
            cy, cx, r = torch.rand(3, generator=generator)
            color = torch.rand(3, 1, 1, generator=generator) - 0.5
            field = field + color * torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.1 * r))
        field = field + 0.04 * torch.randn(3, height, width, generator=generator)
        images.append(field.clamp(0, 1))
    return torch.stack(images).movedim(1, -1).contiguous()


@pytest.fixture(scope="module")
def flawed():
    """The flawed synthetic VAE model, one per test module (import the fixture by name)."""
    return AutoencoderKL(flawed=True, seed=1)


@pytest.fixture(scope="module")
def healthy():
    return AutoencoderKL(flawed=False, seed=1)
