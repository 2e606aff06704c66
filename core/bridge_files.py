"""Bridge files: one direction (source format -> target format) per .safetensors file, with its fit report."""
import json
import math
import os

import torch.nn as nn

from . import bridge as bridges
from .errors import LatentLabInputError, require
from .formats import FORMATS
from .safefiles import MAX_HEADER_BYTES, atomic_save, check_specs, expect_tensor, read_header, read_tensors, short_name
from .validate import excerpt

KIND = "latent_bridge"
MAX_FILE_BYTES = 8 * bridges.MAX_PARAMETERS + MAX_HEADER_BYTES + 8  # every number in float64, the largest header
MAX_ARCHITECTURE_CHARS = 1024


def save_bridge(path: str, bridge: nn.Module, source: str, target: str, metadata: dict) -> None:
    """metadata: the fit report (figures, data size); architecture, formats and units are added here."""
    meta = {"latent_lab": KIND, "version": 1, "source_format": source, "target_format": target,
            "direction": f"{source}->{target}", "architecture": json.dumps(bridge.architecture()),
            "parameters": bridges.parameter_count(bridge),
            "maps": "raw LATENT values of source_format -> raw LATENT values of target_format", **metadata}
    atomic_save(bridge.state_dict(), path, meta)


def inspect_bridge(path: str) -> dict:
    """A bridge file's metadata with its architecture parsed, checked from the header alone: kind, formats,
    architecture, parameter count, and every tensor's name and shape. Nothing is built or read beyond the header,
    so a node's input check can call it."""
    name = short_name(path)
    specs, metadata = read_header(path, "latent bridge", MAX_FILE_BYTES)
    require(metadata.get("latent_lab") == KIND,
            f"'{name}' is not a Latent Lab bridge file (it says latent_lab={excerpt(metadata.get('latent_lab'))}).",
            "Pick a file made by Fit Latent Bridge.")
    for key in ("source_format", "target_format"):
        require(metadata.get(key) in FORMATS, f"'{name}' names an unknown {key.replace('_', ' ')} "
                f"{excerpt(metadata.get(key))}.", "Re-fit it with Fit Latent Bridge.")
    architecture = _architecture(metadata.get("architecture", ""), name)
    shapes = bridges.check_architecture(architecture)
    for key, channels in (("in_channels", "source_format"), ("out_channels", "target_format")):
        fmt = FORMATS[metadata[channels]]
        require(architecture[key] == fmt.channels,
                f"'{name}' maps {architecture['in_channels']} -> {architecture['out_channels']} channels, "
                f"which does not fit {FORMATS[metadata['source_format']].label} -> "
                f"{FORMATS[metadata['target_format']].label}.", "Re-fit it with Fit Latent Bridge.")
    check_specs(specs, shapes, name)
    return dict(metadata, architecture=architecture)


def load_bridge(path: str) -> tuple[nn.Module, dict]:
    """(bridge in eval mode on the CPU, metadata with architecture parsed) or a clear error."""
    metadata = inspect_bridge(path)
    tensors = read_tensors(path, "latent bridge")
    bridge = bridges.build(metadata["architecture"])
    name = short_name(path)
    expected = bridge.state_dict()
    bridge.load_state_dict({k: expect_tensor(tensors, k, tuple(v.shape), name) for k, v in expected.items()})
    return bridge.eval(), metadata


def _architecture(text: str, name: str) -> dict:
    require(len(text) <= MAX_ARCHITECTURE_CHARS, f"'{name}' has an architecture entry of {len(text):,} characters; "
            f"a bridge's is under {MAX_ARCHITECTURE_CHARS}.", "Re-fit it with Fit Latent Bridge.")
    try:
        architecture = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than Python's stack
        reason = "nested too deeply" if isinstance(error, RecursionError) else excerpt(str(error), 80)
        raise LatentLabInputError(f"'{name}' has an unreadable architecture entry: {reason}.",
                                  "Re-fit it with Fit Latent Bridge.") from None
    require(isinstance(architecture, dict), f"'{name}' has no architecture description.", "Re-fit it.")
    return architecture


def describe(metadata: dict) -> str:
    """One line: direction, architecture and the fit report's figures."""
    architecture = metadata["architecture"]
    kind = architecture["type"] if architecture["type"] == "affine" else \
        f"conv {architecture['width']}x{architecture['blocks']}"
    parameters = sum(math.prod(shape) for shape in bridges.architecture_shapes(architecture).values())
    parts = [f"{FORMATS[metadata['source_format']].label} -> {FORMATS[metadata['target_format']].label}",
             f"{kind}, {parameters:,} parameters"]
    if "held_out_pixel_psnr_db" in metadata:
        parts.append(f"held-out pixel PSNR {_number(metadata['held_out_pixel_psnr_db'])} dB "
                     f"(VAE round trip {_number(metadata.get('roundtrip_pixel_psnr_db'))} dB)")
    if "held_out_latent_relative_mse" in metadata:
        parts.append(f"held-out latent MSE {_number(metadata['held_out_latent_relative_mse'], 4)} of variance")
    return " · ".join(parts)


def _number(value, digits: int = 2) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError, OverflowError):
        return excerpt(value, 24)
