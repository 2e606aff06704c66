"""Test doubles of ComfyUI's VAE for the bridge tests: linear 8x8-block encoders with a known relation.

BlockVAE.encode: IMAGE [B, H, W, 3] -> [B, 4, H/8, W/8]: mean R, G, B of each 8x8 block (minus 0.5) and a
luminance checker response (2x2 px squares), then an optional latent transform. decode is the exact inverse on
that 4-dimensional block space (pseudo-inverse), clamped to 0..1 as ComfyUI's VAE.decode does, so
encode(decode(z)) == z whenever the decoded pixels stay inside 0..1.
"""
import torch
import torch.nn.functional as F

CELL = 8


def _encoder_matrix() -> torch.Tensor:
    """[4, 192] over pixel_unshuffle's channel order (color * 64 + dy * 8 + dx)."""
    dy, dx = torch.meshgrid(torch.arange(CELL), torch.arange(CELL), indexing="ij")
    checker = (((dy // 2) + (dx // 2)) % 2 * 2 - 1).flatten().float()
    rows = torch.zeros(4, 3 * 64)
    for color in range(3):
        rows[color, color * 64:(color + 1) * 64] = 1 / 64
    for color, weight in enumerate((0.3, 0.6, 0.1)):
        rows[3, color * 64:(color + 1) * 64] = weight * checker / 16
    return rows


ENCODER = _encoder_matrix()
DECODER = torch.linalg.pinv(ENCODER)  # [192, 4]
OFFSET = torch.tensor([0.5, 0.5, 0.5, 0.0])


class BlockVAE:
    """A stand-in for comfy.sd.VAE: encode(IMAGE) -> raw latent, decode(raw latent) -> IMAGE, latent_channels."""

    latent_channels = 4

    def __init__(self, transform=None, inverse=None):
        self.transform = transform or (lambda z: z)
        self.inverse = inverse or (lambda z: z)
        self.calls = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(("encode", tuple(images.shape)))
        height, width = images.shape[1] // CELL * CELL, images.shape[2] // CELL * CELL
        pixels = images[:, :height, :width].permute(0, 3, 1, 2).double()
        blocks = F.pixel_unshuffle(pixels, CELL)
        z = torch.einsum("kc,bchw->bkhw", ENCODER.double(), blocks) - OFFSET.double().view(1, 4, 1, 1)
        return self.transform(z.float())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.calls.append(("decode", tuple(latents.shape)))
        z = self.inverse(latents.float()).double() + OFFSET.double().view(1, 4, 1, 1)
        blocks = torch.einsum("ck,bkhw->bchw", DECODER.double(), z)
        return F.pixel_shuffle(blocks, CELL).clamp(0, 1).permute(0, 2, 3, 1).float()

    def decode_tiled(self, samples, tile_x=64, tile_y=64, overlap=16):
        self.calls.append(("decode_tiled", (tile_x, tile_y, overlap)))
        return self.decode(samples)

    def encode_tiled(self, pixel_samples, tile_x=512, tile_y=512, overlap=64):
        self.calls.append(("encode_tiled", (tile_x, tile_y, overlap)))
        return self.encode(pixel_samples)


def affine_pair(seed: int = 0):
    """(A, B, M, b) with B's encoder = A's encoder @ M + b, M invertible and well conditioned."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator, dtype=torch.float64))
    matrix = (q @ torch.diag(torch.tensor([2.0, 1.5, 1.0, 0.7], dtype=torch.float64))).float()
    bias = torch.randn(4, generator=generator)
    inverse = torch.linalg.inv(matrix.double()).float()
    b = BlockVAE(lambda z: torch.einsum("bchw,ck->bkhw", z, matrix) + bias.view(1, 4, 1, 1),
                 lambda z: torch.einsum("bchw,ck->bkhw", z - bias.view(1, 4, 1, 1), inverse))
    return BlockVAE(), b, matrix, bias


def conv_pair(seed: int = 0):
    """(A, B, kernel): B's latent = A's latent + a fixed 3x3 conv of it (replicate padding). B decodes like A
    (no exact inverse): only latent errors are meaningful for this pair."""
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.randn(4, 4, 3, 3, generator=generator) * 0.3

    def transform(z):
        return z + F.conv2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), kernel)
    return BlockVAE(), BlockVAE(transform), kernel


def flat_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images made of 8x8 blocks of flat mid-range colors: inside the decoder's span and far from clipping."""
    generator = torch.Generator().manual_seed(seed)
    cells = 0.2 + 0.6 * torch.rand(batch, 3, size // CELL, size // CELL, generator=generator)
    return F.interpolate(cells, scale_factor=CELL, mode="nearest").permute(0, 2, 3, 1)
