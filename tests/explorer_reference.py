"""What the Latent Explorer must show, computed by Latent Lab's Python nodes and core.

The Explorer's settings (the same dict its JS uses: center / clamp / maximize / balance, format, factors, item,
mapScale) become the chain of correction nodes it exports; that chain runs here through the real node classes,
and the result is rendered with core.preview and core.render. Used by tools/make_explorer_fixtures.py, the
fixture tests and the browser tests. Requires the pack loaded as `latent_lab` (tests/conftest.py or
tools/_pack.py).
"""
import base64
import copy

import numpy as np
import torch
from safetensors.torch import load

LEGACY_SCALE = 0.18215
HISTOGRAM_BINS = 64


def read_latent(data: bytes) -> torch.Tensor:
    """A .latent file's samples as ComfyUI's LoadLatent reads them (raw values, float32)."""
    tensors = load(data)
    multiplier = 1.0 if "latent_format_version_0" in tensors else 1.0 / LEGACY_SCALE
    samples = tensors["latent_tensor"].float() * multiplier
    return samples[None] if samples.ndim == 3 else samples


def channel_list(channels: list, count: int) -> str:
    chosen = sorted(set(channels))
    return "all" if len(chosen) == count else ",".join(str(c) for c in chosen)


def default_settings(format_key: str, channels: int) -> dict:
    from latent_lab.core import correct_ops
    defaults = correct_ops.FORMAT_DEFAULTS.get(format_key)
    boundary = defaults["boundary"] if defaults else correct_ops.DEFAULT_BOUNDARY

    def chosen(operation):
        spec = defaults["channels"][operation] if defaults else "all"
        return list(range(channels)) if spec == "all" else [int(c) for c in spec.split(",")]

    return {
        "format": format_key, "factors": "comfyui", "item": 0, "mapScale": "shared",
        "center": {"enabled": False, "channels": chosen("center"), "channelStrength": 1, "globalStrength": 1},
        "clamp": {"enabled": False, "threshold": 3.5, "boundary": boundary, "mode": "pixel", "strength": 1},
        "maximize": {"enabled": False, "channels": chosen("maximize"), "boundary": boundary, "strength": 1},
        "balance": {"enabled": False, "target": "neutral", "channels": chosen("color_balance"), "strength": 1},
    }


def with_changes(settings: dict, **sections) -> dict:
    out = copy.deepcopy(settings)
    for key, value in sections.items():
        if isinstance(value, dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def node_chain(settings: dict, channels: int) -> list:
    """[(node key, {widget: value})]: the nodes the Explorer exports for these settings, in order."""
    s, fmt = settings, settings["format"]
    chain = []
    if s["center"]["enabled"]:
        chain.append(("LatentLabCenter", {"format": fmt, "channels": channel_list(s["center"]["channels"], channels),
                                          "channel_strength": s["center"]["channelStrength"],
                                          "global_strength": s["center"]["globalStrength"]}))
    if s["clamp"]["enabled"]:
        chain.append(("LatentLabSoftClamp", {"format": fmt, "threshold": s["clamp"]["threshold"],
                                             "boundary": s["clamp"]["boundary"], "mode": s["clamp"]["mode"],
                                             "strength": s["clamp"]["strength"]}))
    if s["maximize"]["enabled"]:
        chain.append(("LatentLabMaximize", {"format": fmt, "channels": channel_list(s["maximize"]["channels"], channels),
                                            "boundary": s["maximize"]["boundary"], "strength": s["maximize"]["strength"]}))
    if s["balance"]["enabled"]:
        chain.append(("LatentLabColorBalance", {"format": fmt, "factors": s["factors"], "target": s["balance"]["target"],
                                                "channels": channel_list(s["balance"]["channels"], channels),
                                                "strength": s["balance"]["strength"]}))
    chain.append(("LatentLabRGBPreview", {"format": fmt, "factors": s["factors"]}))
    return chain


def run_chain(samples: torch.Tensor, settings: dict) -> torch.Tensor:
    """Raw samples after the exported correction nodes, run through the real node classes."""
    from latent_lab.nodes import NODE_CLASS_MAPPINGS
    latent = {"samples": samples}
    for key, values in node_chain(settings, samples.shape[1]):
        if key == "LatentLabRGBPreview":
            continue
        cls = NODE_CLASS_MAPPINGS[key]
        result = getattr(cls(), cls.FUNCTION)(latent=latent, **values)
        latent = result["result"][0] if isinstance(result, dict) else result[0]
    return latent["samples"]


def to_bytes(rgb: torch.Tensor) -> np.ndarray:
    """[..., 3] floats in 0..1 -> uint8, rounded as core.render.to_pil does."""
    return (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def numpy_histograms(values: np.ndarray, lo: float, hi: float, bins: int = HISTOGRAM_BINS) -> list:
    edges = np.linspace(lo, hi, bins + 1)
    return [np.histogram(row, edges)[0].astype(int).tolist() for row in values]


def expected(samples: torch.Tensor, settings: dict) -> dict:
    """Preview and channel-map bytes, map bounds, histograms and mean color for the shown item."""
    from correct_reference import mean_color
    from latent_lab.core import formats, preview, render
    from latent_lab.core.channel_maps import symmetric_ranges
    fmt = formats.FORMATS[settings["format"]]
    item = settings["item"]
    corrected_raw = run_chain(samples, settings)[item:item + 1].float()
    affine = fmt.rgb_affine(settings["factors"])
    rgb = preview.linear_rgb(corrected_raw, affine)[0].permute(1, 2, 0)
    scaled = fmt.to_scaled(corrected_raw)
    original = fmt.to_scaled(samples[item:item + 1].float())
    bounds = symmetric_ranges(scaled, "shared" if settings["mapScale"] == "shared" else "per_channel")[0]
    maps = [to_bytes(render.diverging(scaled[0, c] / bounds[c])) for c in range(scaled.shape[1])]
    flat_orig = original[0].flatten(1).numpy().astype(np.float64)
    flat = scaled[0].flatten(1).numpy().astype(np.float64)
    lo, hi = float(min(flat.min(), flat_orig.min())), float(max(flat.max(), flat_orig.max()))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    cast = mean_color(corrected_raw, affine)[0]
    return {
        "preview": to_bytes(rgb),
        "maps": maps,
        "bounds": [float(b) for b in bounds],
        "histogram": {"bins": HISTOGRAM_BINS, "lo": lo, "hi": hi, "counts": numpy_histograms(flat, lo, hi),
                      "original": numpy_histograms(flat_orig, lo, hi)},
        "mean_color": [float(v) for v in cast],
    }


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).decode()


def unb64(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(shape)


def latent_bytes(samples: torch.Tensor, legacy: bool = False, dtype=torch.float32) -> bytes:
    """A .latent file as ComfyUI's SaveLatent writes it (legacy: the old scaled-SD1 format without the version key)."""
    from safetensors.torch import save
    tensors = {"latent_tensor": (samples * LEGACY_SCALE if legacy else samples).to(dtype).contiguous()}
    if not legacy:
        tensors["latent_format_version_0"] = torch.tensor([])
    return save(tensors, metadata={"prompt": "{}"})


def synthetic_latent(shape, format_key: str, seed: int, peak_scaled: float = 6.0) -> torch.Tensor:
    """Smooth color fields, texture and a few outliers, reaching about ±peak_scaled in scaled units (raw out)."""
    from latent_lab.core import formats
    fmt = formats.FORMATS[format_key]
    generator = torch.Generator().manual_seed(seed)
    batch, channels, height, width = shape
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    out = torch.empty(shape)
    for b in range(batch):
        for c in range(channels):
            phase = torch.rand(3, generator=generator) * 6.28
            field = (torch.sin(xs * (2 + c % 3) * 3.1 + phase[0]) * torch.cos(ys * (1 + c % 2) * 2.7 + phase[1])
                     + 0.6 * torch.sin((xs + ys) * 5.0 + phase[2]))
            field = field + 0.35 * torch.randn(height, width, generator=generator) + (torch.rand(1, generator=generator) - 0.4)
            out[b, c] = field * 2.0
        cells = torch.randint(0, height * width, (4,), generator=generator)
        for cell in cells.tolist():
            out[b, cell % channels, cell // width, cell % width] = peak_scaled * (1 if cell % 2 else -1)
    out = out / out.abs().amax() * peak_scaled
    return fmt.to_raw(out).contiguous()
