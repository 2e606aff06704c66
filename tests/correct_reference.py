"""Plain reference helpers the correction tests compare against (not used by the pack itself)."""
import torch

from latent_lab.core.correct_ops import REC709_LUMA
from latent_lab.core.formats import RgbAffine


def lerp(x: torch.Tensor, corrected: torch.Tensor, strength: float) -> torch.Tensor:
    """Blend toward a correction; strength 0 gives x itself, 1 the correction."""
    if strength == 0:
        return x
    if strength == 1:
        return corrected
    return x + (corrected - x) * strength


def channel_means(x: torch.Tensor) -> torch.Tensor:
    """[B, C] mean of each item's channels, float32."""
    return x.float().reshape(x.shape[0], x.shape[1], -1).mean(dim=2)


def mean_color(x: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    """Mean color of each item's unclamped linear preview, [B, 3]; affine maps x's units to RGB 0..1."""
    means = channel_means(x)
    return means @ affine.weight.to(means.device).float() + affine.bias.to(means.device).float()


def neutral_of(colors: torch.Tensor) -> torch.Tensor:
    """The gray with each color's Rec. 709 luma: removes a cast, keeps brightness."""
    luma = colors @ torch.tensor(REC709_LUMA, dtype=colors.dtype, device=colors.device)
    return luma[:, None].expand(-1, 3)


def timestep_percent(timestep: float, last: int = 999) -> float:
    """A diffusers timestep (last = pure noise ... 0 = clean) as percent of sampling: ComfyUI's own percent for
    discrete models (percent_to_sigma(p) = sigma at t = (1 - p) x 999)."""
    return 100.0 * (last - timestep) / last
