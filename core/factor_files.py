"""Fitted RGB factor files: raw latent -> RGB 0..1, one affine map per file."""
import os

from .errors import require
from .formats import RgbAffine
from .safefiles import atomic_save, expect_tensor, read

KIND = "rgb_factors"


def save_factors(path: str, affine: RgbAffine, metadata: dict) -> None:
    meta = {"latent_lab": KIND, "version": 1, "channels": affine.channels,
            "maps": "raw LATENT values -> RGB in 0..1 (clamp after)", **metadata}
    atomic_save({"weight": affine.weight, "bias": affine.bias}, path, meta)


def load_factors(path: str) -> tuple[RgbAffine, dict]:
    name = os.path.basename(path)
    tensors, metadata = read(path, "RGB factor")
    require(metadata.get("latent_lab", KIND) == KIND,
            f"'{name}' is a Latent Lab '{metadata.get('latent_lab')}' file, not RGB factors.",
            "Pick a file made by Fit Latent RGB Factors.")
    weight = tensors.get("weight")
    require(weight is not None and weight.ndim == 2,
            f"'{name}' has no 2-D 'weight' tensor.", "Re-fit it with Fit Latent RGB Factors.")
    weight = expect_tensor(tensors, "weight", (weight.shape[0], 3), name)
    bias = expect_tensor(tensors, "bias", (3,), name)
    return RgbAffine(weight, bias, f"fitted · {name}"), metadata
