"""Reading ComfyUI MODEL and VAE objects: format hints, encode and decode."""
import torch

from ..core.errors import require
from .comfy_formats import model_format
from .runtime import Progress, check_interrupt


def model_format_hint(model) -> str | None:
    """The format key (built-in key or ComfyUI class name) of a MODEL (ComfyUI ModelPatcher), if it has one."""
    fmt = model_format(model)
    return fmt.key if fmt is not None else None


def model_latent_channels(model) -> int:
    """The latent channel count of a MODEL (ComfyUI ModelPatcher); refuses anything else."""
    require(hasattr(model, "clone") and hasattr(model, "get_model_object"),
            "The model input is not a ComfyUI MODEL.", "Connect a MODEL output (Load Checkpoint...).")
    return int(getattr(model.get_model_object("latent_format"), "latent_channels", 4))


def vae_channels(vae) -> int:
    return int(getattr(vae, "latent_channels", 4))


def vae_downscale(vae) -> int | None:
    """Pixels per latent cell along a side (8 for SD-family VAEs); None when the VAE has no whole spatial factor."""
    ratio = vae.spacial_compression_encode() if hasattr(vae, "spacial_compression_encode") else \
        getattr(vae, "downscale_ratio", None)
    return int(ratio) if isinstance(ratio, (int, float)) and float(ratio).is_integer() else None


def check_vae_matches(vae, channels: int, what: str = "latent") -> None:
    if vae is None:
        return
    require(vae_channels(vae) == channels,
            f"The VAE makes {vae_channels(vae)}-channel latents but the {what} has {channels}.",
            "Connect the VAE that belongs to this latent's model.")


def encode(vae, images: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """IMAGE [B, H, W, 3] -> raw LATENT samples, chunked so Cancel stops between chunks."""
    progress = Progress(-(-images.shape[0] // chunk))
    parts = []
    for start in range(0, images.shape[0], chunk):
        check_interrupt()
        parts.append(vae.encode(images[start:start + chunk]).float().cpu())
        progress.update()
    return torch.cat(parts)


def decode(vae, latents: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """Raw latent [B, C, h, w] -> IMAGE [B, H, W, 3]."""
    progress = Progress(-(-latents.shape[0] // chunk))
    parts = []
    for start in range(0, latents.shape[0], chunk):
        check_interrupt()
        parts.append(vae.decode(latents[start:start + chunk]).float().cpu())
        progress.update()
    return torch.cat(parts)
