"""Latent formats: channel count, units and linear RGB factors.

A ComfyUI LATENT holds raw VAE values. Samplers work in scaled units:
scaled = (raw - shift) * scale. Every factor set here maps SCALED latents to
RGB in [-1, 1] (ComfyUI's convention); `RgbAffine` folds units and range into
one affine map from RAW latents to RGB in [0, 1], which is what previews use.
"""
import functools
from dataclasses import dataclass, field

import torch

from .errors import LatentLabInputError, require


@dataclass(frozen=True)
class FactorSet:
    """RGB = scaled_latent @ weights + bias, in [-1, 1]. weights: channels x 3."""
    name: str
    weights: tuple
    bias: tuple = (0.0, 0.0, 0.0)
    source: str = ""


@dataclass(frozen=True)
class RgbAffine:
    """RGB in [0, 1] (before clamping) = raw_latent @ weight + bias."""
    weight: torch.Tensor  # [channels, 3]
    bias: torch.Tensor    # [3]
    label: str = ""

    @property
    def channels(self) -> int:
        return self.weight.shape[0]


@dataclass(frozen=True)
class LatentFormat:
    key: str
    label: str
    channels: int
    scale: float
    shift: float
    channel_names: tuple
    factor_sets: dict = field(default_factory=dict)
    comfy_classes: tuple = ()

    def to_scaled(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.shift) * self.scale

    def to_raw(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled / self.scale + self.shift

    def factor_set(self, name: str = "comfyui") -> FactorSet:
        require(name in self.factor_sets,
                f"The {self.label} format has no '{name}' factor set.",
                f"Choose one of: {', '.join(self.factor_sets)}.")
        return self.factor_sets[name]

    def rgb_affine(self, name: str = "comfyui") -> RgbAffine:
        return _raw_affine(self.factor_set(name), self.scale, self.shift, self.label)


@functools.lru_cache(maxsize=32)
def _raw_affine(factors: FactorSet, scale: float, shift: float, label: str) -> RgbAffine:
    """Built once per format and factor set (nodes ask for it on every run); RgbAffine is never changed in place."""
    weights = torch.tensor(factors.weights, dtype=torch.float64)
    bias = torch.tensor(factors.bias, dtype=torch.float64)
    # (((raw - shift) * scale) @ W + b + 1) / 2, regrouped as raw @ W' + b'
    weight = weights * scale / 2
    offset = (bias + 1 - shift * scale * weights.sum(0)) / 2
    return RgbAffine(weight.float(), offset.float(), f"{label} · {factors.name}")


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


def format_for_comfy_class(class_name: str):
    for fmt in FORMATS.values():
        if class_name in fmt.comfy_classes:
            return fmt
    return None


def resolve_format(choice: str, channels: int, hint: str | None = None) -> LatentFormat:
    """Explicit choice first, then a hint (MODEL, VAE or LATENT tag), then an unambiguous channel count."""
    if choice != "auto":
        require(choice in FORMATS, f"Unknown latent format '{choice}'.",
                f"Choose one of: {', '.join(FORMAT_CHOICES)}.")
        fmt = FORMATS[choice]
        require(fmt.channels == channels,
                f"The latent has {channels} channels but the {fmt.label} format has {fmt.channels}.",
                "Pick the format that made this latent, or set format to auto.")
        return fmt
    if hint is not None and hint in FORMATS and FORMATS[hint].channels == channels:
        return FORMATS[hint]
    candidates = [f for f in FORMATS.values() if f.channels == channels]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LatentLabInputError(
            f"No known latent format has {channels} channels (known: "
            + ", ".join(f"{f.label} {f.channels}" for f in FORMATS.values()) + ").",
            "Use a fitted factor file for this VAE (Fit Latent RGB Factors).")
    names = " or ".join(f.label for f in candidates)
    raise LatentLabInputError(
        f"A {channels}-channel latent is ambiguous: it could be {names}.",
        "Set the format input, or connect the MODEL (or the LATENT from a Latent Lab node) that made it.")
