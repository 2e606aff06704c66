"""Latent bridges: raw latents of one format -> raw latents of another (SD1.5 <-> SDXL and the like).

- AffineBridge: one affine map per latent cell, z_B = z_A @ W + b, fitted in closed form.
- ConvBridge: that affine map plus a small residual conv net (at most 1.5M numbers), trained.
- approximate(): no data, no file, no VAE. Built from both formats' linear RGB factors plus
  channel-statistics matching; see its docstring for exactly what it does. Follow it with img2img.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import require
from .factor_fit import pixels_and_targets, psnr, solve_affine
from .formats import LatentFormat
from .validate import excerpt

MAX_PARAMETERS = 1_500_000
PREVIEW_ERROR = 0.1  # in ComfyUI's [-1, 1] preview units (0.05 on the 0..1 scale); weighs color against spread


class AffineBridge(nn.Module):
    """z_B = z_A @ weight + bias at every latent cell, raw units in and out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.register_buffer("weight", torch.eye(in_channels, out_channels))
        self.register_buffer("bias", torch.zeros(out_channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,ck->bkhw", z, self.weight) + self.bias.view(1, -1, 1, 1)

    def architecture(self) -> dict:
        return {"type": "affine", "in_channels": self.weight.shape[0], "out_channels": self.weight.shape[1]}


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConvBridge(nn.Module):
    """The affine bridge plus a residual conv net on normalized input; starts out equal to the affine map."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, blocks: int = 6):
        super().__init__()
        self.width, self.blocks = width, blocks
        self.affine = AffineBridge(in_channels, out_channels)
        self.register_buffer("in_mean", torch.zeros(in_channels))
        self.register_buffer("in_std", torch.ones(in_channels))
        self.register_buffer("out_std", torch.ones(out_channels))
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = (z - self.in_mean.view(1, -1, 1, 1)) / self.in_std.view(1, -1, 1, 1)
        residual = self.tail(F.silu(self.body(self.head(x))))
        return self.affine(z) + residual * self.out_std.view(1, -1, 1, 1)

    def architecture(self) -> dict:
        return {"type": "conv", "in_channels": self.affine.weight.shape[0],
                "out_channels": self.affine.weight.shape[1], "width": self.width, "blocks": self.blocks}


def parameter_count(bridge: nn.Module) -> int:
    """Every stored number, normalization statistics included."""
    return sum(t.numel() for t in bridge.state_dict().values())


ARCHITECTURE_LIMITS = {"in_channels": (1, 64), "out_channels": (1, 64), "width": (1, 512), "blocks": (0, 64)}


def architecture_shapes(architecture) -> dict:
    """{state_dict name: shape} of the bridge an architecture description (as saved in a bridge file) builds,
    computed from the description alone, with every field checked: nothing is allocated."""
    require(isinstance(architecture, dict), "The bridge architecture is not a JSON object.",
            "Re-fit it with Fit Latent Bridge.")
    kind = architecture.get("type")
    require(kind in ("affine", "conv"), f"Unknown bridge type {excerpt(kind)}.", "Re-fit it with Fit Latent Bridge.")
    keys = ("in_channels", "out_channels") + (("width", "blocks") if kind == "conv" else ())
    for key in keys:
        value, (low, high) = architecture.get(key), ARCHITECTURE_LIMITS[key]
        require(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
                f"Bridge architecture field '{key}' is {excerpt(value)}; expected an integer {low}-{high}.",
                "Re-fit it with Fit Latent Bridge.")
    c_in, c_out = architecture["in_channels"], architecture["out_channels"]
    affine = {"weight": (c_in, c_out), "bias": (c_out,)}
    if kind == "affine":
        return affine
    width, blocks = architecture["width"], architecture["blocks"]
    shapes = {f"affine.{k}": v for k, v in affine.items()}
    shapes.update({"in_mean": (c_in,), "in_std": (c_in,), "out_std": (c_out,),
                   "head.weight": (width, c_in, 3, 3), "head.bias": (width,),
                   "tail.weight": (c_out, width, 3, 3), "tail.bias": (c_out,)})
    for block in range(blocks):
        for conv in ("conv1", "conv2"):
            shapes[f"body.{block}.{conv}.weight"] = (width, width, 3, 3)
            shapes[f"body.{block}.{conv}.bias"] = (width,)
    return shapes


def check_architecture(architecture) -> dict:
    """architecture_shapes, refused above MAX_PARAMETERS numbers (before anything is built)."""
    shapes = architecture_shapes(architecture)
    count = sum(math.prod(shape) for shape in shapes.values())
    require(count <= MAX_PARAMETERS,
            f"A {architecture['type']} bridge of width {architecture.get('width')} and {architecture.get('blocks')} "
            f"blocks has {count:,} parameters; the limit is {MAX_PARAMETERS:,}.",
            "Use fewer blocks or a smaller width.")
    return shapes


def build(architecture: dict) -> nn.Module:
    """A bridge from its architecture description (as saved in a bridge file), sizes checked before it is built."""
    check_architecture(architecture)
    sizes = {k: architecture[k] for k in ARCHITECTURE_LIMITS if k in architecture}
    if architecture["type"] == "affine":
        return AffineBridge(sizes["in_channels"], sizes["out_channels"])
    return ConvBridge(**sizes)


# ---- fitting ---------------------------------------------------------------------------------------------------

def check_pairs(pairs: list) -> None:
    """pairs: [(source [N, C_A, h, w], target [N, C_B, h, w]), ...]: items and cells line up, one channel count
    per side."""
    require(len(pairs) > 0, "No paired latents to fit a bridge on.", "Feed images or turn on the calibration set.")
    for source, target in pairs:
        require(source.ndim == 4 and target.ndim == 4 and source.shape[0] == target.shape[0]
                and source.shape[2:] == target.shape[2:],
                f"Paired latents do not line up: {tuple(source.shape)} and {tuple(target.shape)}.",
                "Both VAEs must turn an image into a latent of the same size (8 px per cell for SD1.5 and SDXL).")
    require(len({p[0].shape[1] for p in pairs}) == 1 and len({p[1].shape[1] for p in pairs}) == 1,
            "Paired latents have changing channel counts.", "Use one VAE per side.")


def fit_affine(pairs: list) -> AffineBridge:
    """Least squares over every latent cell of every pair, in closed form."""
    check_pairs(pairs)
    rows = [pixels_and_targets(source, target) for source, target in pairs]
    x, y = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
    require(x.shape[0] >= 4 * (x.shape[1] + 1),
            f"Too few latent cells ({x.shape[0]}) to fit {x.shape[1] + 1} coefficients per channel.",
            "Feed more or larger images.")
    solution = solve_affine(x, y)
    bridge = AffineBridge(x.shape[1], y.shape[1])
    bridge.weight.copy_(solution.weight)
    bridge.bias.copy_(solution.bias)
    return bridge


def _channel_moments(tensors: list) -> tuple:
    values = torch.cat([t.double().transpose(0, 1).flatten(1) for t in tensors], dim=1)
    std = values.std(dim=1)
    return values.mean(dim=1).float(), std.clamp(min=max(1e-6, 1e-3 * std.max().item())).float()


def train_conv(pairs: list, affine: AffineBridge, steps: int, learning_rate: float = 1e-3, seed: int = 0,
               width: int = 64, blocks: int = 6, crop: int = 32, batch: int = 8,
               device: torch.device | str = "cpu", callback=None) -> ConvBridge:
    """Adam on random crops, loss: MSE in units of each target channel's std (so it reads as a share of variance).

    callback(step, loss) runs after every step: report progress there, or raise to stop (nothing is returned then).
    Same seed, same data, same device: same bridge.
    """
    check_pairs(pairs)
    require(steps >= 1, f"Conv training needs at least 1 step, got {steps}.")
    with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes under inference mode
        pairs = [(source.detach().clone(), target.detach().clone()) for source, target in pairs]
        return _train(pairs, affine, steps, learning_rate, seed, width, blocks, crop, batch, device, callback)


def _train(pairs, affine, steps, learning_rate, seed, width, blocks, crop, batch, device, callback) -> ConvBridge:
    in_channels, out_channels = pairs[0][0].shape[1], pairs[0][1].shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bridge = build({"type": "conv", "in_channels": in_channels, "out_channels": out_channels,
                        "width": width, "blocks": blocks})
    bridge.affine.load_state_dict({k: v.clone() for k, v in affine.state_dict().items()})
    mean, std = _channel_moments([p[0] for p in pairs])
    bridge.in_mean.copy_(mean)
    bridge.in_std.copy_(std)
    bridge.out_std.copy_(_channel_moments([p[1] for p in pairs])[1])
    bridge.to(device).train()
    optimizer = torch.optim.Adam(bridge.parameters(), lr=learning_rate)
    cosine = lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / steps))  # from 1 down to 0.1
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([p[0].shape[0] * p[0].shape[2] * p[0].shape[3] for p in pairs], dtype=torch.float64)
    scale = bridge.out_std.view(1, -1, 1, 1)
    for step in range(steps):
        source, target = _sample_crops(pairs, sizes, crop, batch, generator)
        prediction = bridge(source.to(device))
        loss = ((prediction - target.to(device)) / scale).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if callback is not None:
            callback(step + 1, loss.item())
    return bridge.eval().cpu()


def _sample_crops(pairs, sizes, crop, batch, generator):
    """A batch of aligned random crops from one pair group (groups are picked by their number of cells)."""
    source, target = pairs[int(torch.multinomial(sizes, 1, generator=generator))]
    height, width = min(crop, source.shape[2]), min(crop, source.shape[3])
    items = torch.randint(0, source.shape[0], (batch,), generator=generator)
    tops = torch.randint(0, source.shape[2] - height + 1, (batch,), generator=generator)
    lefts = torch.randint(0, source.shape[3] - width + 1, (batch,), generator=generator)
    pick = lambda t: torch.stack([t[i, :, y:y + height, x:x + width] for i, y, x in zip(items, tops, lefts)])
    return pick(source).float(), pick(target).float()


@torch.no_grad()
def apply(bridge: nn.Module, latents: torch.Tensor, device: torch.device | str = "cpu", callback=None) -> torch.Tensor:
    """Run a bridge item by item on `device`; callback() between items (progress, interrupt)."""
    bridge = bridge.to(device)
    out = []
    for item in latents.split(1):
        out.append(bridge(item.to(device, torch.float32)).cpu())
        if callback is not None:
            callback()
    return torch.cat(out)


# ---- quality -----------------------------------------------------------------------------------------------------

def pooled_psnr(predictions: list, references: list) -> float:
    return psnr(torch.cat([p.flatten() for p in predictions]), torch.cat([r.flatten() for r in references]))


def latent_errors(bridge: nn.Module, pairs: list) -> dict:
    """Held-out latent MSE in the target's raw units, and as a share of the target's variance."""
    with torch.no_grad():
        errors = torch.cat([(bridge(s.float()) - t.float()).flatten().double() for s, t in pairs])
    targets = torch.cat([t.flatten().double() for _, t in pairs])
    mse = errors.pow(2).mean().item()
    return {"held_out_latent_mse": mse, "held_out_latent_relative_mse": mse / max(targets.var().item(), 1e-12)}


def pixel_report(bridge: nn.Module, pairs: list, references: list, decode_target) -> tuple:
    """PSNR of decode_B(bridge(z_A)) against decode_A(z_A) (given as `references`); returns (dB, decoded images)."""
    with torch.no_grad():
        decoded = [decode_target(bridge(source.float())) for source, _ in pairs]
    return pooled_psnr(decoded, references), decoded


# ---- the approximate bridge ---------------------------------------------------------------------------------------

def _factors(fmt: LatentFormat):
    factors = fmt.factor_set("comfyui")
    return torch.tensor(factors.weights, dtype=torch.float64), torch.tensor(factors.bias, dtype=torch.float64)


def _invisible(weights: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [C, C - 3] of the latent directions the linear preview does not see."""
    u, _, _ = torch.linalg.svd(weights, full_matrices=True)
    return u[:, weights.shape[1]:]


def approximate_maps(source: LatentFormat, target: LatentFormat, preview_error: float = PREVIEW_ERROR) -> dict:
    """The matrices approximate() uses, in SCALED units of each format (see approximate())."""
    w_a, b_a = _factors(source)
    w_b, b_b = _factors(target)
    gram = w_b.T @ w_b
    exact = torch.linalg.solve(gram, w_b.T)                                                   # [3, C_B]
    regularized = torch.linalg.solve(gram + preview_error ** 2 * torch.eye(3, dtype=gram.dtype), w_b.T)
    carry = torch.zeros(w_a.shape[0], w_b.shape[0], dtype=torch.float64)
    n_a, n_b = _invisible(w_a), _invisible(w_b)
    if n_a.shape[1] == n_b.shape[1] and n_a.shape[0] == n_b.shape[0]:
        u, _, vh = torch.linalg.svd(n_a.T @ n_b)  # rotation of one invisible basis onto the other closest to identity
        carry = n_a @ (u @ vh) @ n_b.T
    return {"mean": w_a @ exact + carry, "detail": w_a @ regularized + carry, "offset": (b_a - b_b) @ exact}


def approximate(raw: torch.Tensor, source: LatentFormat, target: LatentFormat,
                preview_error: float = PREVIEW_ERROR) -> torch.Tensor:
    """Approximate bridge from the formats alone. Not a substitute for a VAE round trip: follow it with img2img
    (denoise 0.4 or more) in the target model. Per batch item, in each format's scaled units s = (raw - shift) * scale:

    1. Color (linear RGB factors, ComfyUI's): the item's mean latent is mapped to the target latent of least norm
       whose linear preview has exactly the same color, so a flat latent keeps its preview color and every item
       keeps its mean preview color.
    2. Channel statistics: scaled units give both formats about unit spread per channel (that is what the scale
       factors normalise). Each cell's deviation from the item mean is mapped to the most probable target
       deviation with that preview color under a unit-spread prior (ridge inverse, preview error sigma = 0.1 on
       the [-1, 1] scale), so target channels the preview barely sees (SDXL's 3rd) are not inflated several-fold
       to chase color. Detail colors therefore match only approximately.
    3. Structure: the directions neither preview sees (1 of 4 for SD1.5 and SDXL) carry the source's invisible
       component over at the same scaled spread, by the rotation between the two invisible bases closest to the
       identity on channel indices. Their correspondence is not known; only the spread is matched. Skipped when
       the channel counts differ.
    Same format in and out: the input, unchanged.
    """
    if source.key == target.key:
        return raw.clone()
    require(raw.shape[1] == source.channels,
            f"The latent has {raw.shape[1]} channels but the {source.label} format has {source.channels}.",
            "Set the source format to the one that made this latent.")
    maps = {k: v.to(raw.device, torch.float64) for k, v in approximate_maps(source, target, preview_error).items()}
    scaled = source.to_scaled(raw.double())
    mean = scaled.mean(dim=(2, 3), keepdim=True)
    mapped = lambda x, matrix: torch.einsum("bchw,ck->bkhw", x, matrix)
    out = mapped(mean, maps["mean"]) + mapped(scaled - mean, maps["detail"]) + maps["offset"].view(1, -1, 1, 1)
    return target.to_raw(out).to(raw.dtype)


# ---- one direction, end to end -----------------------------------------------------------------------------------

def fit_direction(train: list, held: list, decode_source, decode_target, encode_target, conv_steps: int = 0,
                  learning_rate: float = 1e-3, seed: int = 0, width: int = 64, blocks: int = 6,
                  device: torch.device | str = "cpu", callback=None) -> tuple[list, torch.Tensor]:
    """Fit the affine bridge (and the conv bridge when conv_steps > 0) on `train` pairs and measure them on `held`.

    decode_source/decode_target: raw latent -> IMAGE; encode_target: IMAGE -> raw latent (the two VAEs).
    Returns ([(kind, bridge, report), ...], comparison IMAGE [1, H, W * (kinds + 2), 3]: decode_A(z_A), then
    decode_B(bridge(z_A)) per kind, then the VAE round trip, for the first held-out image).
    """
    check_pairs(train)
    check_pairs(held)
    fitted = [("affine", fit_affine(train))]
    if conv_steps > 0:
        fitted.append(("conv", train_conv(train, fitted[0][1], conv_steps, learning_rate, seed, width, blocks,
                                          device=device, callback=callback)))
    references = [decode_source(source.float()) for source, _ in held]
    roundtrip = [decode_target(encode_target(images)) for images in references]
    data = {"train_items": sum(s.shape[0] for s, _ in train),
            "train_cells": sum(s.shape[0] * s.shape[2] * s.shape[3] for s, _ in train),
            "held_out_images": sum(s.shape[0] for s, _ in held),
            "held_out_cells": sum(s.shape[0] * s.shape[2] * s.shape[3] for s, _ in held)}
    results, columns = [], [references[0][:1]]
    for kind, bridge in fitted:
        decibels, decoded = pixel_report(bridge, held, references, decode_target)
        report = {"kind": kind, "parameters": parameter_count(bridge), **latent_errors(bridge, held),
                  "held_out_pixel_psnr_db": decibels, "roundtrip_pixel_psnr_db": pooled_psnr(roundtrip, references),
                  **data}
        if kind == "conv":
            report.update(conv_steps=conv_steps, learning_rate=learning_rate, seed=seed)
        results.append((kind, bridge, report))
        columns.append(decoded[0][:1])
    columns.append(roundtrip[0][:1])
    return results, torch.cat([c.float().cpu() for c in columns], dim=2)
