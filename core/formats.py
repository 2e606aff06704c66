"""Latent formats: channel count, dimensions, units and linear RGB factors.

A ComfyUI LATENT holds raw VAE values. Samplers work in scaled units:
scaled = (raw - shift) * scale, with one scale and shift for the whole latent or one per channel (formats that
normalize by per-channel mean and std). Every factor set here maps SCALED latents to RGB in [-1, 1] (ComfyUI's
convention); `RgbAffine` folds units and range into one affine map from RAW latents to RGB in [0, 1], which is
what previews use. Image formats hold [B, C, H, W] latents (2 dimensions), video formats [B, C, T, H, W] (3).

Besides the built-in table, formats are made from ComfyUI's latent-format classes (adapters/comfy_formats.py)
with `measured_format`, which reads a class's raw->scaled conversion numerically.
"""
import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from .errors import LatentLabInputError, require

FIT_NODE_HINT = "Fit a factor file for its VAE with the Fit Latent RGB Factors node."


@dataclass(frozen=True)
class FactorSet:
    """RGB = scaled_latent @ weights + bias, in [-1, 1]. weights: rows x 3.

    unshuffle: None when there is one row per latent channel. Otherwise (block_h, block_w, index): the latent's
    channels are first spread over block_h x block_w pixels per cell, row k at sub-pixel (i, j) reading latent
    channel index[(k * block_h + i) * block_w + j] (ComfyUI's latent_rgb_factors_reshape, Flux.2's 128 -> 32).
    """
    name: str
    weights: tuple
    bias: tuple = (0.0, 0.0, 0.0)
    source: str = ""
    unshuffle: tuple | None = None


@dataclass(frozen=True)
class RgbAffine:
    """RGB in [0, 1] (before clamping) = raw_latent @ weight + bias.

    weight [channels, 3] and bias [3]; or, for factors with a sub-pixel block (block != (1, 1)), weight
    [block_h * block_w, channels, 3] and bias [block_h * block_w, 3]: one map per sub-pixel of each latent cell.
    """
    weight: torch.Tensor
    bias: torch.Tensor
    label: str = ""
    block: tuple = (1, 1)

    @property
    def channels(self) -> int:
        return self.weight.shape[-2]

    @property
    def blocked(self) -> bool:
        return self.block != (1, 1)

    def mean_map(self) -> tuple:
        """(weight [C, 3], bias [3]) giving the mean color of a cell: the map itself unless blocked."""
        if not self.blocked:
            return self.weight, self.bias
        return self.weight.mean(0), self.bias.mean(0)


@dataclass(frozen=True)
class LatentFormat:
    """scale and shift: floats, or tuples with one value per channel."""
    key: str
    label: str
    channels: int
    scale: float | tuple
    shift: float | tuple
    channel_names: tuple
    factor_sets: dict = field(default_factory=dict)
    comfy_classes: tuple = ()
    dimensions: int = 2

    @property
    def uniform(self) -> bool:
        return not isinstance(self.scale, tuple) and not isinstance(self.shift, tuple)

    @property
    def latent_ndim(self) -> int:
        return self.dimensions + 2

    def unit_vectors(self, dtype=torch.float64) -> tuple:
        """(scale [C], shift [C]) as tensors."""
        return (torch.as_tensor(self.scale, dtype=dtype).expand(self.channels).clone(),
                torch.as_tensor(self.shift, dtype=dtype).expand(self.channels).clone())

    def to_scaled(self, raw: torch.Tensor) -> torch.Tensor:
        if self.uniform:
            return (raw - self.shift) * self.scale
        scale, shift = (_along_channels(v, raw) for v in self.unit_vectors(raw.dtype))
        return (raw - shift) * scale

    def to_raw(self, scaled: torch.Tensor) -> torch.Tensor:
        if self.uniform:
            return scaled / self.scale + self.shift
        scale, shift = (_along_channels(v, scaled) for v in self.unit_vectors(scaled.dtype))
        return scaled / scale + shift

    def factor_set(self, name: str = "comfyui") -> FactorSet:
        require(bool(self.factor_sets), f"The {self.label} format has no linear RGB factors.",
                "Previews and color balance need factors: " + FIT_NODE_HINT)
        require(name in self.factor_sets,
                f"The {self.label} format has no '{name}' factor set.",
                f"Choose one of: {', '.join(self.factor_sets)}.")
        return self.factor_sets[name]

    def rgb_affine(self, name: str = "comfyui") -> RgbAffine:
        return _raw_affine(self.factor_set(name), self.scale, self.shift, self.channels, self.label)


def _along_channels(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[C] -> [1, C, 1, ...] to broadcast against `like` [B, C, ...]."""
    return values.to(like.device).view(1, -1, *([1] * (like.ndim - 2)))


@functools.lru_cache(maxsize=64)
def _raw_affine(factors: FactorSet, scale, shift, channels: int, label: str) -> RgbAffine:
    """Built once per format and factor set (nodes ask for it on every run); RgbAffine is never changed in place."""
    rows = torch.tensor(factors.weights, dtype=torch.float64)
    bias = torch.tensor(factors.bias, dtype=torch.float64)
    scale = torch.as_tensor(scale, dtype=torch.float64).expand(channels)
    shift = torch.as_tensor(shift, dtype=torch.float64).expand(channels)
    weights = _channel_weights(rows, factors.unshuffle, channels)  # [S, C, 3]
    # (((raw - shift) * scale) @ W + b + 1) / 2, regrouped as raw @ W' + b'
    weight = weights * scale[:, None] / 2
    offset = (bias + 1 - (shift * scale) @ weights) / 2
    block = (1, 1) if factors.unshuffle is None else tuple(factors.unshuffle[:2])
    if block == (1, 1):
        weight, offset = weight[0], offset[0]
    return RgbAffine(weight.float(), offset.float(), f"{label} · {factors.name}", block)


def _channel_weights(rows: torch.Tensor, unshuffle: tuple | None, channels: int) -> torch.Tensor:
    """[S, C, 3]: for each sub-pixel of a cell, the factor row each latent channel contributes through."""
    if unshuffle is None:
        return rows[None]
    block_h, block_w, index = unshuffle
    source = torch.tensor(index).view(rows.shape[0], block_h * block_w)  # [K, S]
    weights = torch.zeros(block_h * block_w, channels, 3, dtype=rows.dtype)
    for sub in range(block_h * block_w):
        weights[sub].index_add_(0, source[:, sub], rows)
    return weights


def _blog_sdxl() -> FactorSet:
    # The blog writes R = 60c0 - 60c1 + 25c2 - 70c3 + 150 in 0..255; v = x / 127.5 - 1 gives [-1, 1].
    in_0_255 = [[60, 60, 60], [-60, -5, 10], [25, 15, -5], [-70, -50, -35]]
    offsets = [150, 140, 130]
    return FactorSet(
        "blog",
        tuple(tuple(w / 127.5 for w in row) for row in in_0_255),
        tuple(o / 127.5 - 1 for o in offsets),
        "T. A. Vass, 'Explaining the SDXL latent space' (2023)",
    )


_COMFY = "ComfyUI comfy/latent_formats.py"

SD15 = LatentFormat(
    key="sd15", label="SD1.x/2.x", channels=4, scale=0.18215, shift=0.0,
    channel_names=("c0", "c1", "c2", "c3"),
    factor_sets={"comfyui": FactorSet("comfyui", (
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177)), source=_COMFY)},
    comfy_classes=("SD15",),
)

SDXL = LatentFormat(
    key="sdxl", label="SDXL", channels=4, scale=0.13025, shift=0.0,
    channel_names=("luminance", "cyan/red", "lime/purple", "pattern"),
    factor_sets={
        "comfyui": FactorSet("comfyui", (
            (0.3651, 0.4232, 0.4341),
            (-0.2533, -0.0042, 0.1068),
            (0.1076, 0.1111, -0.0362),
            (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011), _COMFY),
        "blog": _blog_sdxl(),
    },
    comfy_classes=("SDXL",),
)

SD3 = LatentFormat(
    key="sd3", label="SD3", channels=16, scale=1.5305, shift=0.0609,
    channel_names=tuple(f"c{i}" for i in range(16)),
    factor_sets={"comfyui": FactorSet("comfyui", (
        (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189)),
        (0.2394, 0.2135, 0.1925), _COMFY)},
    comfy_classes=("SD3",),
)

FLUX = LatentFormat(
    key="flux", label="Flux.1", channels=16, scale=0.3611, shift=0.1159,
    channel_names=tuple(f"c{i}" for i in range(16)),
    factor_sets={"comfyui": FactorSet("comfyui", (
        (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778)),
        (-0.0329, -0.0718, -0.0851), _COMFY)},
    comfy_classes=("Flux",),
)

FORMATS = {f.key: f for f in (SD15, SDXL, SD3, FLUX)}
FORMAT_CHOICES = ("auto",) + tuple(FORMATS)
LATENT_FORMAT_KEY = "latent_lab_format"  # tag our nodes put on LATENT dicts they produce
SHAPE_NAMES = {4: "image latent [B, C, H, W]", 5: "video latent [B, C, T, H, W]"}
# Families that share a channel count and dimensions, named in the ambiguity message even where ComfyUI's classes
# are not available to list.
FAMILIES = {(16, 5): "Wan-family (Wan 2.1, Qwen-Image) or HunyuanVideo"}


def format_for_comfy_class(class_name: str):
    for fmt in FORMATS.values():
        if class_name in fmt.comfy_classes:
            return fmt
    return None


def resolve_format(choice: str, channels: int, hint=None, catalog: Mapping | None = None,
                   ndim: int = 4) -> LatentFormat:
    """Explicit choice first, then a hint (a LatentFormat from the MODEL, or a key from a VAE or LATENT tag), then an
    unambiguous channel count among the formats of the latent's dimensions (ndim 4: image, 5: video).

    catalog: every format known by name (the built-in table by default; inside ComfyUI also its classes)."""
    catalog = FORMATS if catalog is None else catalog
    if choice != "auto":
        require(choice in catalog, f"Unknown latent format '{choice}'.",
                f"Choose one of: auto, {', '.join(catalog)}.")
        fmt = catalog[choice]
        _check_fits(fmt, channels, ndim, "Pick the format that made this latent, or set format to auto.")
        return fmt
    if isinstance(hint, str):
        hint = catalog.get(hint)
    if isinstance(hint, LatentFormat) and hint.channels == channels:
        _check_fits(hint, channels, ndim, "Connect the MODEL that made this latent, or set the format input.")
        return hint
    candidates = _distinct(f for f in catalog.values() if f.channels == channels and f.latent_ndim == ndim)
    if len(candidates) == 1:
        return candidates[0]
    shape = SHAPE_NAMES.get(ndim, f"{ndim}-D latent")
    family = FAMILIES.get((channels, ndim))
    if len(candidates) > 1 or (family and ndim == 5):
        names = " or ".join(f.label for f in candidates) if candidates else family
        note = f" (families: {family})" if family and candidates and ndim == 5 else ""
        raise LatentLabInputError(
            f"A {channels}-channel {shape} is ambiguous: it could be {names}{note}.",
            "Set the format input, or connect the MODEL (or the LATENT from a Latent Lab node) that made it.")
    known = ", ".join(f"{f.label} {f.channels}" for f in _distinct(catalog.values()) if f.latent_ndim == ndim)
    raise LatentLabInputError(
        f"No known latent format has {channels} channels for a {shape}" + (f" (known: {known})." if known else "."),
        "Set the format input or connect the MODEL that made it (inside ComfyUI every format class with RGB "
        f"factors is listed), or: {FIT_NODE_HINT}")


def _distinct(formats) -> list:
    seen, out = set(), []
    for fmt in formats:
        if id(fmt) not in seen:
            seen.add(id(fmt))
            out.append(fmt)
    return out


def _check_fits(fmt: LatentFormat, channels: int, ndim: int, fix: str) -> None:
    require(fmt.channels == channels,
            f"The latent has {channels} channels but the {fmt.label} format has {fmt.channels}.", fix)
    kinds = {4: "Image latents ([B, C, H, W])", 5: "Video latents ([B, C, T, H, W])"}
    require(fmt.latent_ndim == ndim,
            f"{kinds.get(ndim, f'{ndim}-D latents')} need a format of their kind; {fmt.label} makes "
            f"{kinds.get(fmt.latent_ndim, 'other latents').lower()}.", fix)


# ---------------------------------------------------------------------------------------------- measured formats

def measured_units(convert_in: Callable, convert_out: Callable, channels: int, dimensions: int, label: str) -> tuple:
    """(scale, shift) of a raw -> scaled conversion, read from what it does to zeros and ones in each channel:
    floats when every channel shares them, else per-channel tuples. The conversion must be per-channel affine
    (checked on a random latent, and convert_out must undo it); anything else is refused."""
    cell = (1, channels) + (1,) * dimensions
    zero = convert_in(torch.zeros(cell, dtype=torch.float64)).double().flatten()
    slope = convert_in(torch.ones(cell, dtype=torch.float64)).double().flatten() - zero
    require(zero.numel() == channels and bool(torch.isfinite(slope).all()) and bool((slope != 0).all()),
            f"The {label} format's conversion to sampling units does not keep each channel (or loses one).",
            "Latent Lab cannot convert its units: use units raw, or a format whose conversion is a scale and shift.")
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((2, channels) + (3,) * dimensions, generator=generator, dtype=torch.float64) * 3
    shape = (1, channels) + (1,) * dimensions
    expected = probe * slope.view(shape) + zero.view(shape)
    scaled = convert_in(probe).double()
    back = convert_out(scaled).double()
    tolerance = 1e-5 * (1 + expected.abs())
    require(scaled.shape == probe.shape and bool(((scaled - expected).abs() <= tolerance).all())
            and bool(((back - probe).abs() <= 1e-5 * (1 + probe.abs())).all()),
            f"The {label} format's conversion to sampling units is not a scale and shift per channel.",
            "Latent Lab cannot convert its units: use units raw, or set another format.")
    scale, shift = slope, -zero / slope + 0.0   # scaled = slope * raw + zero = (raw - shift) * scale; no -0.0
    if bool((scale == scale[0]).all()) and bool(((shift - shift[0]).abs() <= 1e-12 * (1 + shift[0].abs())).all()):
        return float(scale[0]), float(shift[0])
    return tuple(scale.tolist()), tuple(shift.tolist())


def measured_unshuffle(reshape: Callable, channels: int, rows: int, label: str) -> tuple:
    """(block_h, block_w, index) of a factor reshape that spreads channels over sub-pixels (see FactorSet)."""
    spread = reshape(torch.arange(channels, dtype=torch.float64).view(1, channels, 1, 1))
    ok = spread.ndim == 4 and spread.shape[1] == rows and spread.shape[2] * spread.shape[3] * rows == channels
    require(ok, f"The {label} format's factor reshape does not spread its channels over sub-pixels.",
            FIT_NODE_HINT)
    block_h, block_w = int(spread.shape[2]), int(spread.shape[3])
    index = tuple(int(v) for v in spread[0].round().long().flatten())
    unshuffle = (block_h, block_w, index)
    probe = torch.randn(1, channels, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    require(torch.equal(reshape(probe), spread_channels(probe, unshuffle)),
            f"The {label} format's factor reshape is not a rearrangement of channels into sub-pixels.", FIT_NODE_HINT)
    return unshuffle


def spread_channels(x: torch.Tensor, unshuffle: tuple) -> torch.Tensor:
    """[B, C, H, W] -> [B, K, H * block_h, W * block_w] as FactorSet.unshuffle describes."""
    block_h, block_w, index = unshuffle
    batch, _, height, width = x.shape
    picked = x[:, list(index)].view(batch, -1, block_h, block_w, height, width)
    return picked.permute(0, 1, 4, 2, 5, 3).reshape(batch, -1, height * block_h, width * block_w)


def measured_format(key: str, channels: int, dimensions: int, factors, bias, convert_in: Callable,
                    convert_out: Callable, reshape: Callable | None = None, channel_names: tuple | None = None,
                    source: str = "") -> LatentFormat:
    """A LatentFormat from a format's parts: RGB factors for scaled latents (rows x 3), bias (or None), and its
    raw <-> scaled conversions (measured, see measured_units)."""
    rows = tuple(tuple(float(v) for v in row) for row in factors)
    require(rows and all(len(row) == 3 for row in rows),
            f"The {key} format's RGB factors are not rows of three (R, G, B).", FIT_NODE_HINT)
    require(dimensions in (2, 3), f"The {key} format has {dimensions}-dimensional latents; Latent Lab shows "
            "image (2) and video (3) latents.", "Use a format of an image or video model.")
    unshuffle = measured_unshuffle(reshape, channels, len(rows), key) if reshape is not None else None
    require(unshuffle is not None or len(rows) == channels,
            f"The {key} format has {channels} channels but {len(rows)} rows of RGB factors.", FIT_NODE_HINT)
    scale, shift = measured_units(convert_in, convert_out, channels, dimensions, key)
    bias = (0.0, 0.0, 0.0) if bias is None else tuple(float(v) for v in bias)
    names = channel_names if channel_names is not None else tuple(f"c{i}" for i in range(channels))
    return LatentFormat(key=key, label=key, channels=channels, scale=scale, shift=shift, channel_names=names,
                        factor_sets={"comfyui": FactorSet("comfyui", rows, bias, source, unshuffle)},
                        comfy_classes=(key,), dimensions=dimensions)
