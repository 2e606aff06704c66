"""The VAE round trip between two latent formats, through ComfyUI's VAE objects.

ComfyUI's VAE.encode/decode load the model through model management (load_models_gpu) and fall back to
tiled passes on out-of-memory; we tile ourselves, up front, when an input is larger than the tile size.
"""
import torch

from ..core.calibration import crop_to_cells
from ..core.errors import require
from .comfy_objects import vae_channels
from .runtime import Progress, check_interrupt, intermediate_device, soft_empty_cache


def check_vae(vae, what: str) -> None:
    """A VAE input that is not a ComfyUI VAE (a plain value posted in a prompt) is refused before any work."""
    require(callable(getattr(vae, "encode", None)) and callable(getattr(vae, "decode", None))
            and isinstance(getattr(vae, "latent_channels", 4), int),
            f"The {what} input is not a ComfyUI VAE.", f"Connect a VAE output (Load VAE, Load Checkpoint) to {what}.")


def _ratio(vae) -> int:
    ratio = vae.spacial_compression_decode() if hasattr(vae, "spacial_compression_decode") else 8
    return int(ratio) if isinstance(ratio, (int, float)) else 8


def _tiles(tile_size: int, overlap: int) -> tuple[int, int]:
    """ComfyUI's tiled-node rule: the overlap is at most a quarter of the tile."""
    return tile_size, min(overlap, tile_size // 4)


def decode(vae, latent: torch.Tensor, tile_size: int = 0, overlap: int = 64) -> torch.Tensor:
    """One raw latent [1, C, h, w] -> IMAGE [1, H, W, 3]; tiled when the image would exceed tile_size."""
    ratio = _ratio(vae)
    if tile_size > 0 and max(latent.shape[2:]) * ratio > tile_size and hasattr(vae, "decode_tiled"):
        tile, overlap = _tiles(tile_size, overlap)
        images = vae.decode_tiled(latent, tile_x=tile // ratio, tile_y=tile // ratio, overlap=overlap // ratio)
    else:
        images = vae.decode(latent)
    require(images.ndim == 4 and images.shape[-1] == 3,
            f"The source VAE decoded an image of shape {tuple(images.shape)}.",
            "Use an image VAE (SD1.x, SDXL, SD3, Flux); video and audio VAEs are not supported.")
    return images


def encode(vae, images: torch.Tensor, tile_size: int = 0, overlap: int = 64) -> torch.Tensor:
    """IMAGE [1, H, W, 3] -> raw latent; tiled when the image exceeds tile_size."""
    if tile_size > 0 and max(images.shape[1:3]) > tile_size and hasattr(vae, "encode_tiled"):
        tile, overlap = _tiles(tile_size, overlap)
        return vae.encode_tiled(images, tile_x=tile, tile_y=tile, overlap=overlap)
    return vae.encode(images)


def roundtrip(latents: torch.Tensor, source_vae, target_vae, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """Decode every batch item with the source VAE, encode it with the target VAE: [B, C_A, h, w] -> [B, C_B, h', w'].

    One item at a time, so a large batch needs no more memory than one image; Cancel stops between items.
    """
    require(vae_channels(source_vae) == latents.shape[1],
            f"The source VAE makes {vae_channels(source_vae)}-channel latents but the latent has {latents.shape[1]}.",
            "Connect the VAE of the model that made this latent as source_vae.")
    progress = Progress(latents.shape[0])
    out = []
    for item in latents.split(1):
        check_interrupt()
        images = crop_to_cells(decode(source_vae, item, tile_size, overlap)[..., :3])
        out.append(encode(target_vae, images, tile_size, overlap).float().to(intermediate_device()))
        progress.update()
    soft_empty_cache()
    return torch.cat(out)
