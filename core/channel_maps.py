"""One diverging-colormap tile per latent channel, labeled with its statistics."""
import torch
import torch.nn.functional as F

from .render import diverging, from_pil, grid, labeled_tile

SCALE_MODES = ("shared", "per_channel")


def symmetric_ranges(values: torch.Tensor, scale_mode: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, C] half-widths: one shared max|x| for the batch, or one per item and channel."""
    if scale_mode == "shared":
        bound = values.abs().amax().clamp(min=1e-8)
        return bound.expand(values.shape[0], values.shape[1])
    return values.abs().amax(dim=(2, 3)).clamp(min=1e-8)


def tile_columns(channels: int) -> int:
    return 4 if channels > 4 and channels % 4 == 0 else channels


def channel_label(name: str, channel: torch.Tensor, bound: float) -> list:
    return [
        f"{name}  (±{bound:.3g})",
        f"mean {channel.mean():+.3f}  std {channel.std(correction=0):.3f}",
        f"min {channel.min():+.3f}  max {channel.max():+.3f}",
    ]


def channel_maps(values: torch.Tensor, names: list, scale_mode: str = "shared", tile_scale: int = 4) -> torch.Tensor:
    """[B, C, H, W] (already in display units) -> IMAGE [B, H', W', 3], one grid of tiles per item.

    In float64, where the statistics of any finite float32 values stay finite."""
    values = values.detach().cpu().double()
    ranges = symmetric_ranges(values, scale_mode)
    tile_w = values.shape[3] * tile_scale
    text_size = max(9, min(16, tile_w // 14))
    pages = []
    for item, bounds in zip(values, ranges):
        tiles = []
        for channel, name, bound in zip(item, names, bounds):
            colored = diverging(channel / bound)
            if tile_scale > 1:
                colored = F.interpolate(colored.permute(2, 0, 1)[None], scale_factor=tile_scale, mode="nearest")[0].permute(1, 2, 0)
            tiles.append(labeled_tile(colored, channel_label(name, channel, float(bound)), text_size))
        pages.append(from_pil(grid(tiles, tile_columns(len(tiles)))))
    return torch.stack(pages)
