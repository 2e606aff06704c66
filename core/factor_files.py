"""Fitted RGB factor files: raw latent -> RGB 0..1, one affine map per file."""
from .errors import require
from .formats import RgbAffine
from .safefiles import MAX_HEADER_BYTES, atomic_save, check_specs, expect_tensor, read_header, read_tensors, short_name
from .validate import excerpt

KIND = "rgb_factors"
MAX_CHANNELS = 1024
MAX_FILE_BYTES = 8 * (MAX_CHANNELS + 1) * 3 + MAX_HEADER_BYTES + 8  # float64 factors, the largest header


def save_factors(path: str, affine: RgbAffine, metadata: dict) -> None:
    meta = {"latent_lab": KIND, "version": 1, "channels": affine.channels,
            "maps": "raw LATENT values -> RGB in 0..1 (clamp after)", **metadata}
    atomic_save({"weight": affine.weight, "bias": affine.bias}, path, meta)


def inspect_factors(path: str) -> tuple[int, dict]:
    """(channels, metadata) of a factor file from its header alone: kind, tensor names and shapes."""
    name = short_name(path)
    specs, metadata = read_header(path, "RGB factor", MAX_FILE_BYTES)
    require(metadata.get("latent_lab", KIND) == KIND,
            f"'{name}' is a Latent Lab '{excerpt(metadata.get('latent_lab'))}' file, not RGB factors.",
            "Pick a file made by Fit Latent RGB Factors.")
    weight = specs.get("weight")
    require(weight is not None and len(weight[1]) == 2 and 1 <= weight[1][0] <= MAX_CHANNELS,
            f"'{name}' has no 2-D 'weight' tensor of 1 to {MAX_CHANNELS} channels.",
            "Re-fit it with Fit Latent RGB Factors.")
    channels = weight[1][0]
    check_specs(specs, {"weight": (channels, 3), "bias": (3,)}, name)
    return channels, metadata


def load_factors(path: str) -> tuple[RgbAffine, dict]:
    """(factors, metadata), the header checked before any tensor is read."""
    name = short_name(path)
    channels, metadata = inspect_factors(path)
    tensors = read_tensors(path, "RGB factor")
    weight = expect_tensor(tensors, "weight", (channels, 3), name)
    bias = expect_tensor(tensors, "bias", (3,), name)
    return RgbAffine(weight, bias, f"fitted · {name}"), metadata
