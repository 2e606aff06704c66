"""Bridge files: one direction (source format -> target format) per .safetensors file, with its fit report."""
import json
import os

import torch.nn as nn

from . import bridge as bridges
from .errors import LatentLabInputError, require
from .formats import FORMATS
from .safefiles import atomic_save, expect_tensor, read

KIND = "latent_bridge"


def save_bridge(path: str, bridge: nn.Module, source: str, target: str, metadata: dict) -> None:
    """metadata: the fit report (figures, data size); architecture, formats and units are added here."""
    meta = {"latent_lab": KIND, "version": 1, "source_format": source, "target_format": target,
            "direction": f"{source}->{target}", "architecture": json.dumps(bridge.architecture()),
            "parameters": bridges.parameter_count(bridge),
            "maps": "raw LATENT values of source_format -> raw LATENT values of target_format", **metadata}
    atomic_save(bridge.state_dict(), path, meta)


def load_bridge(path: str) -> tuple[nn.Module, dict]:
    """(bridge in eval mode on the CPU, metadata with architecture parsed) or a clear error."""
    name = os.path.basename(path)
    tensors, metadata = read(path, "latent bridge")
    require(metadata.get("latent_lab") == KIND,
            f"'{name}' is not a Latent Lab bridge file (it says latent_lab={metadata.get('latent_lab')!r}).",
            "Pick a file made by Fit Latent Bridge.")
    for key in ("source_format", "target_format"):
        require(metadata.get(key) in FORMATS, f"'{name}' names an unknown {key.replace('_', ' ')} "
                f"{metadata.get(key)!r}.", "Re-fit it with Fit Latent Bridge.")
    try:
        architecture = json.loads(metadata.get("architecture", ""))
    except json.JSONDecodeError as error:
        raise LatentLabInputError(f"'{name}' has an unreadable architecture entry: {error}.",
                                  "Re-fit it with Fit Latent Bridge.") from error
    require(isinstance(architecture, dict), f"'{name}' has no architecture description.", "Re-fit it.")
    bridge = bridges.build(architecture)
    for key, channels in (("in_channels", "source_format"), ("out_channels", "target_format")):
        fmt = FORMATS[metadata[channels]]
        require(architecture[key] == fmt.channels,
                f"'{name}' maps {architecture['in_channels']} -> {architecture['out_channels']} channels, "
                f"which does not fit {FORMATS[metadata['source_format']].label} -> "
                f"{FORMATS[metadata['target_format']].label}.", "Re-fit it with Fit Latent Bridge.")
    expected = bridge.state_dict()
    extra = sorted(set(tensors) - set(expected))
    require(not extra, f"'{name}' holds tensors this bridge does not use: {', '.join(extra[:5])}.",
            "Re-fit it with Fit Latent Bridge.")
    bridge.load_state_dict({k: expect_tensor(tensors, k, tuple(v.shape), name) for k, v in expected.items()})
    metadata = dict(metadata, architecture=architecture)
    return bridge.eval(), metadata


def describe(metadata: dict) -> str:
    """One line: direction, architecture and the fit report's figures."""
    architecture = metadata["architecture"]
    kind = architecture["type"] if architecture["type"] == "affine" else \
        f"conv {architecture['width']}x{architecture['blocks']}"
    parts = [f"{FORMATS[metadata['source_format']].label} -> {FORMATS[metadata['target_format']].label}",
             f"{kind}, {int(metadata.get('parameters', 0)):,} parameters"]
    if "held_out_pixel_psnr_db" in metadata:
        parts.append(f"held-out pixel PSNR {_number(metadata['held_out_pixel_psnr_db'])} dB "
                     f"(VAE round trip {_number(metadata.get('roundtrip_pixel_psnr_db'))} dB)")
    if "held_out_latent_relative_mse" in metadata:
        parts.append(f"held-out latent MSE {_number(metadata['held_out_latent_relative_mse'], 4)} of variance")
    return " · ".join(parts)


def _number(value, digits: int = 2) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)
