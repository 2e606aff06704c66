"""One diverging-colormap tile per latent channel, labeled with its statistics."""
import torch
import torch.nn.functional as F

from .preview import pick_frame
from .render import diverging, from_pil, grid, labeled_tile

SCALE_MODES = ("shared", "per_channel")


def symmetric_ranges(values: torch.Tensor, scale_mode: str) -> torch.Tensor:
    """[B, C, ...] -> [B, C] half-widths: one shared max|x| for the batch, or one per item and channel."""
    if scale_mode == "shared":
        bound = values.abs().amax().clamp(min=1e-8)
        return bound.expand(values.shape[0], values.shape[1])
    return values.abs().flatten(2).amax(dim=2).clamp(min=1e-8)


def tile_columns(channels: int) -> int:
    return 4 if channels > 4 and channels % 4 == 0 else channels


def channel_label(name: str, channel: torch.Tensor, bound: float, frame: str = "") -> list:
    return [
        f"{name}{frame}  (±{bound:.3g})",
        f"mean {channel.mean():+.3f}  std {channel.std(correction=0):.3f}",
        f"min {channel.min():+.3f}  max {channel.max():+.3f}",
    ]


def channel_maps(values: torch.Tensor, names: list, scale_mode: str = "shared", tile_scale: int = 4,
                 frame: int = 0) -> torch.Tensor:
    """[B, C, H, W] or [B, C, T, H, W] (already in display units) -> IMAGE [B, H', W', 3], one grid of tiles per
    item. A video's tiles show `frame`; color ranges and labels cover every frame of the item.

    In float64, where the statistics of any finite float32 values stay finite."""
    values = values.detach().cpu().double()
    ranges = symmetric_ranges(values, scale_mode)
    shown = pick_frame(values, frame) if values.ndim == 5 else values
    frame_note = f" · frame {frame}/{values.shape[2]}" if values.ndim == 5 else ""
    tile_w = shown.shape[3] * tile_scale
    text_size = max(9, min(16, tile_w // 14))
    pages = []
    for item, picture, bounds in zip(values, shown, ranges):
        tiles = []
        for channel, image, name, bound in zip(item, picture, names, bounds):
            colored = diverging(image / bound)
            if tile_scale > 1:
                colored = F.interpolate(colored.permute(2, 0, 1)[None], scale_factor=tile_scale, mode="nearest")[0].permute(1, 2, 0)
            tiles.append(labeled_tile(colored, channel_label(name, channel, float(bound), frame_note), text_size))
        pages.append(from_pil(grid(tiles, tile_columns(len(tiles)))))
    return torch.stack(pages)
