"""The four channel corrections of latents: center, soft clamp, maximize and color balance.

Every operation corrects each batch item on its own, reduces over every dimension after the channel one (so
[B, C, H, W] and [B, C, T, H, W] both work) and returns a new tensor of x's dtype on x's device: inputs are never
written. Limits are in SCALED units, (raw - shift) x scale: the units samplers use and those of the SDXL-latent
blog (SDXL ends near ±4). `scale` and `shift` say how x maps to them (default: x is scaled already), so a node
corrects a raw LATENT without making a scaled copy; each is a number, or a sequence with one value per channel
(formats that normalize each channel by its own mean and std).

Each operation is one or two reductions, a few figures per item and channel, then one dense pass in torch on x's
device, with no data-dependent indexing (what a GPU needs during sampling). The figures are computed in float64
(precision.wide_dtype), so finite values never overflow on the way; a result that would still leave the range of
x's dtype is refused with a FloatRangeError, never returned as inf or NaN. That check, and the one for a channel
sum that overflows float32, read one number back to the host.
"""
import functools
import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import LatentLabInputError, require
from .formats import LatentFormat, RgbAffine
from .precision import wide_dtype
from .validate import all_finite, check_finite, excerpt

CLAMP_MODES = ("pixel", "channel")
REC709_LUMA = (0.2126, 0.7152, 0.0722)

# What 'auto' means per format. The blog leaves SDXL's pattern channel (3) alone when it maximizes; SD1.x channel
# meanings are not documented, so every channel is scaled (or shifted) alike there.
FORMAT_DEFAULTS = {
    "sdxl": {"boundary": 4.0, "channels": {"center": "all", "maximize": "0,1,2", "color_balance": "0,1,2"}},
    "sd15": {"boundary": 4.0, "channels": {"center": "all", "maximize": "all", "color_balance": "all"}},
}
DEFAULT_BOUNDARY = 4.0
MIN_PEAK = 1e-12  # maximize leaves items whose chosen channels have max|x| below this alone
MAX_LIMIT = 1e6   # thresholds and boundaries, scaled units: latents stay within about ±100 even while sampling
TINY = 1e-30


class FloatRangeError(LatentLabInputError):
    """Finite values that a correction would carry past the range of their float type."""


def check_strength(value: float, what: str = "strength") -> None:
    require(math.isfinite(value) and 0 <= value <= 1, f"The {what} {value} is outside 0..1.",
            "0 leaves the latent as it is, 1 applies the correction fully.")


def check_boundary(boundary: float) -> None:
    require(math.isfinite(boundary) and 0 < boundary <= MAX_LIMIT,
            f"Maximize needs a boundary above 0 and at most {MAX_LIMIT:g}; got {boundary}.",
            "Give it in scaled units: SDXL latents end near ±4.")


def format_boundary(fmt: LatentFormat | None) -> float:
    """maximize's boundary=auto: the format's own, where one is known (SD1.x and SDXL end near ±4 scaled)."""
    defaults = FORMAT_DEFAULTS.get(fmt.key) if fmt is not None else None
    require(fmt is None or defaults is not None,
            f"maximize has no default boundary for the {fmt.label if fmt is not None else ''} format.",
            "Give it in scaled units, such as boundary=4 (Latent Stats with units scaled shows how far a good "
            "result of this model reaches).")
    return defaults["boundary"] if defaults else DEFAULT_BOUNDARY


def _units(value, like: torch.Tensor):
    """A scale or shift: a float stays one; a per-channel sequence becomes a [C] tensor in like's dtype."""
    if isinstance(value, (int, float)):
        return float(value)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _vector(value, count: int, like: torch.Tensor) -> torch.Tensor:
    """A scale or shift as a [count] tensor in like's dtype, whether one number or one per channel."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(count)


def _uniform(scale, shift) -> bool:
    return isinstance(scale, (int, float)) and isinstance(shift, (int, float))


# ---------------------------------------------------------------------------------------------- shared steps

def _cells(x: torch.Tensor) -> torch.Tensor:
    """[B, C, N]: a view when x is contiguous."""
    require(x.ndim >= 3, f"Expected a latent [batch, channels, ...]; got shape {tuple(x.shape)}.")
    return x.reshape(x.shape[0], x.shape[1], -1)


def _channel_means(x: torch.Tensor) -> torch.Tensor:
    """[B, C] in the wide dtype. Summed in float32, several times faster; where that sum overflows (values
    beyond about 1e34) or meets a NaN, summed again in the wide dtype."""
    cells, wide = _cells(x), wide_dtype(x.device)
    means = cells.mean(dim=2, dtype=torch.float32)
    return means.to(wide) if all_finite(means) else cells.mean(dim=2, dtype=wide)


def _peak(low: torch.Tensor, high: torch.Tensor, shift: float) -> torch.Tensor:
    """Each item's max|x - shift| from minima and maxima [B, ...], [B] in the wide dtype."""
    wide = wide_dtype(low.device)
    return torch.maximum(high.flatten(1).amax(1).to(wide) - shift, shift - low.flatten(1).amin(1).to(wide))


def _per_channel(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B, C] figures as float32, shaped to broadcast against x."""
    return values.float().view(*values.shape, *([1] * (x.ndim - 2)))


def _offset(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x + one offset per item and channel ([B, C])."""
    return _finished(x, x.float() + _per_channel(offsets, x))


def _finished(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out in x's dtype, once it holds no inf or NaN. A NaN or inf in x is refused as such; finite values that
    the operation carried past the range of x's dtype with a FloatRangeError."""
    out = out.to(x.dtype)
    if all_finite(out):
        return out
    check_finite(x, "LATENT")
    dtype = str(x.dtype).removeprefix("torch.")
    raise FloatRangeError(
        f"Correcting this latent would carry values past the {dtype} range (±{torch.finfo(x.dtype).max:.3g}): its "
        f"values reach ±{x.detach().abs().amax().item():.3g}.",
        "Latent values normally stay within about ±100. A latent this large is broken: check the node that made it.")


# ---------------------------------------------------------------------------------------------- center

def center(x: torch.Tensor, channel_strengths: Sequence[float], global_strength: float = 1.0, shift=0.0,
           strength: float = 1.0, scale=1.0) -> torch.Tensor:
    """Subtract each channel's mean x its strength (0 leaves a channel alone), then the item's mean over channels
    x global; strength blends from x (0) to that correction (1), as every operation's strength does.

    Means are taken about `shift`, so x may be raw values: with one scale for all channels the offsets do not
    depend on it; with one per channel the mean over channels is taken in scaled units.
    """
    require(len(channel_strengths) == x.shape[1],
            f"{len(channel_strengths)} channel strengths for a {x.shape[1]}-channel latent.")
    for value, what in ((global_strength, "global strength"), (strength, "strength"),
                        *((s, "channel strength") for s in channel_strengths)):
        check_strength(value, what)
    raw_means = _channel_means(x)
    shift, scale = _units(shift, raw_means), _units(scale, raw_means)
    per_channel = not isinstance(scale, float)
    means = (raw_means - shift) * scale if per_channel else raw_means - shift
    s = means.new_tensor(channel_strengths)
    left = means * (1 - s)  # each channel's mean after its own centering
    offsets = -(means * s + global_strength * left.mean(dim=1, keepdim=True))
    return _offset(x, offsets * strength / scale if per_channel else offsets * strength)


# ---------------------------------------------------------------------------------------------- soft clamp

def check_clamp_limits(threshold: float, boundary: float, relative: bool = False) -> None:
    if relative:
        require(math.isfinite(threshold) and 0 <= threshold < 1 and math.isfinite(boundary)
                and 0 < boundary <= MAX_LIMIT,
                f"Relative soft clamp needs 0 < boundary <= {MAX_LIMIT:g} and 0 <= threshold < 1; got {threshold}, "
                f"{boundary}.",
                "Both are fractions: boundary of the item's max|x|, threshold of the boundary.")
        return
    require(math.isfinite(threshold) and math.isfinite(boundary) and 0 <= threshold < boundary <= MAX_LIMIT,
            f"Soft clamp needs 0 <= threshold < boundary <= {MAX_LIMIT:g}; got threshold {threshold}, "
            f"boundary {boundary}.", "Set the threshold below the boundary (the blog uses 3.5 and 4 in scaled units).")


def soft_clamp(x: torch.Tensor, threshold: float = 3.5, boundary: float = 4.0, mode: str = "pixel",
               relative: bool = False, strength: float = 1.0, scale=1.0, shift=0.0) -> torch.Tensor:
    """Map values beyond ±threshold onto [threshold, boundary] linearly, each side on its own.

    The range mapped is [threshold, max(M, boundary)], M being the largest value at that pixel across channels
    (mode "pixel", the blog's choice) or in that channel of the item (mode "channel"). Taking max(M, boundary)
    instead of the blog's M means a value is never pushed outward, and an item already inside ±boundary is left
    exactly as it is (the blog's early exit, tied to the boundary rather than to a hard-coded 4).
    relative: boundary is a fraction of the item's max|x| and threshold a fraction of that boundary (the blog's
    first-steps clamp uses 0.998 and 0.998). Values that do not move are copied bit for bit. With per-channel
    units the reach across channels is measured in scaled units.
    """
    require(mode in CLAMP_MODES, f"Unknown soft clamp mode '{excerpt(mode)}'.", f"Use one of {CLAMP_MODES}.")
    check_clamp_limits(threshold, boundary, relative)
    check_strength(strength)
    work = x.float()
    if _uniform(scale, shift):
        return _finished(x, _clamp_pulls(work, threshold, boundary, mode, relative, strength, scale, shift)
                         .neg_().add_(work))
    scale_c, shift_c = (_per_channel(_vector(v, x.shape[1], work)[None], work) for v in (scale, shift))
    scaled = (work - shift_c).mul_(scale_c)
    pulls = _clamp_pulls(scaled, threshold, boundary, mode, relative, strength, 1.0, 0.0)
    return _finished(x, pulls.div_(scale_c).neg_().add_(work))


def _clamp_pulls(work: torch.Tensor, threshold, boundary, mode, relative, strength, scale: float,
                 shift: float) -> torch.Tensor:
    """How far soft_clamp moves each value of `work` inward (in work's units): 0 where nothing moves."""
    low, high = _reach(work, mode)
    if relative:
        b = _peak(low, high, shift) * (scale * boundary)                    # [B], scaled
        limits = _raw_limits(torch.stack([b, b * threshold, -b, -b * threshold]), scale, shift, work)
    else:  # one number each, the same for every item
        limits = [shift + v / scale for v in (boundary, threshold, -boundary, -threshold)]
    upper_b, upper_t, lower_b, lower_t = limits
    pull_up = _pull(high, upper_b, upper_t).mul_(strength)
    pull_down = _pull(-low, -lower_b, -lower_t).mul_(strength)  # the lower side, mirrored
    # x - pull x excess over the threshold, each side with its own pull. In place after the first step: two
    # latent-sized buffers in all, since a fresh one costs a CPU about as much as the pass that fills it.
    above = (work - upper_t).clamp_(min=0).mul_(pull_up)
    below = (work - lower_t).clamp_(max=0).mul_(pull_down)
    return above.add_(below)


def _reach(work: torch.Tensor, mode: str) -> tuple:
    """The min and max each value's range runs to: of its pixel across channels ([B, 1, ...]) in mode "pixel",
    of its channel in the item ([B, C, 1...]) in mode "channel"."""
    if mode == "pixel":
        return work.amin(dim=1, keepdim=True), work.amax(dim=1, keepdim=True)
    cells = _cells(work)
    return _per_channel(cells.amin(dim=2), work), _per_channel(cells.amax(dim=2), work)


def _raw_limits(scaled: torch.Tensor, scale: float, shift: float, work: torch.Tensor) -> torch.Tensor:
    """[K, B] limits in scaled units -> x's units, float32 [K, B, 1...] shaped for x. A limit beyond the float32
    range is one no value reaches: it becomes the largest float32, where it still holds nothing back."""
    largest = torch.finfo(torch.float32).max
    raw = (shift + scaled / scale).clamp_(-largest, largest)
    return raw.float().view(*raw.shape, *([1] * (work.ndim - 1)))


def _pull(reach: torch.Tensor, limit, start) -> torch.Tensor:
    """The share of a value's excess over `start` (the threshold) that the clamp removes; limit and start are
    numbers, or one per item ([B, 1...]).

    1 - the blog's slope (b - t) / (M - t) with M = max(reach, b), written (M - b) / (M - t): exactly 0 wherever
    the reach stays within the boundary b, so those values come out bit for bit. M - t is 0 for an all-zero item
    in relative mode (b = t = 0), or where b and t round to one float32: kept off zero, so nothing moves there
    rather than becoming NaN.
    """
    top = reach.clamp(min=limit)
    spread = (top - start).clamp_(min=TINY)
    return top.sub_(limit).div_(spread)


# ---------------------------------------------------------------------------------------------- maximize

def maximize(x: torch.Tensor, boundary: float, channels: Sequence[int], strength: float = 1.0,
             scale=1.0, shift=0.0) -> torch.Tensor:
    """Scale the chosen channels by one factor per item so their max|x| (scaled) equals the boundary.

    Items whose chosen channels are (almost) empty, max|x| <= MIN_PEAK, are left alone rather than having rounding
    noise blown up.
    """
    check_boundary(boundary)
    check_strength(strength)
    cells, chosen = _cells(x), list(channels)
    low, high = cells.amin(dim=2), cells.amax(dim=2)   # [B, C]: chosen columns picked here, not from the latent
    peak = _chosen_peak(low, high, chosen, scale, shift)                        # [B], scaled
    factor = torch.where(peak > MIN_PEAK, boundary / peak.clamp(min=MIN_PEAK), 1.0)
    gain = peak.new_ones(high.shape)
    gain[:, chosen] = (1 + strength * (factor - 1))[:, None]
    # gain about the shift: y_scaled = gain * x_scaled means y = gain * x + shift * (1 - gain)
    out = x.float() * _per_channel(gain, x)
    shift = _units(shift, gain)
    if not isinstance(shift, float) or shift:
        out += _per_channel(shift * (1 - gain), x)
    return _finished(x, out)


def _chosen_peak(low: torch.Tensor, high: torch.Tensor, chosen: list, scale, shift) -> torch.Tensor:
    """Each item's max|x - shift| x scale over the chosen channels, from per-channel minima and maxima [B, C]."""
    if _uniform(scale, shift):
        return _peak(low[:, chosen], high[:, chosen], shift) * scale
    wide = wide_dtype(low.device)
    scale_c, shift_c = (_vector(v, low.shape[1], high.new_empty(0, dtype=wide))[chosen] for v in (scale, shift))
    reach = torch.maximum(high[:, chosen].to(wide) - shift_c, shift_c - low[:, chosen].to(wide))
    return (reach * scale_c.abs()).amax(1)


# ---------------------------------------------------------------------------------------------- color balance

@dataclass(frozen=True)
class Balanced:
    """A color-balanced latent, and each item's linear-preview mean color before and after ([B, 3], wide dtype)."""
    latent: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor


def balance(x: torch.Tensor, affine: RgbAffine, target: torch.Tensor | None, channels: Sequence[int],
            strength: float = 1.0) -> Balanced:
    """Shift chosen channels so each item's linear-preview mean color becomes the target (see balance_offsets).

    The affine takes x's units (raw values with fmt.rgb_affine, scaled ones with scaled_affine).
    """
    latent, means, offsets = _balanced(x, affine, target, channels, strength)
    weight, bias = (v.to(means) for v in affine.mean_map())
    return Balanced(latent, means @ weight + bias, (means + offsets) @ weight + bias)


def color_balance(x: torch.Tensor, affine: RgbAffine, target: torch.Tensor | None,
                  channels: Sequence[int], strength: float = 1.0) -> torch.Tensor:
    """The balanced latent alone (see balance)."""
    return _balanced(x, affine, target, channels, strength)[0]


def _balanced(x, affine, target, channels, strength) -> tuple:
    """The balanced latent, x's channel means and the offsets added to them."""
    require(affine.channels == x.shape[1],
            f"The latent has {x.shape[1]} channels but the factors '{affine.label}' expect {affine.channels}.",
            "Pick factors made for this latent's format.")
    check_strength(strength)
    means = _channel_means(x)
    offsets = balance_offsets(means, affine, target, channels) * strength
    return _offset(x, offsets), means, offsets


def balance_offsets(means: torch.Tensor, affine: RgbAffine, target: torch.Tensor | None,
                    channels: Sequence[int]) -> torch.Tensor:
    """[B, C] offsets, in the units of the channel means `means` [B, C], zero outside `channels`, of least norm that
    best move each preview mean (means @ weight + bias) to the target. target: [3] in 0..1, or None for each item's
    neutral gray. Exact whenever the chosen channels' factor rows span RGB (3+ independent channels); a
    least-squares best fit otherwise.
    """
    goal = None if target is None else tuple(float(v) for v in torch.as_tensor(target).flatten())
    require(goal is None or len(goal) == 3, "The target color needs three values (RGB).")
    mean_weight, mean_bias = affine.mean_map()
    weight, bias = tuple(map(tuple, mean_weight.tolist())), tuple(mean_bias.tolist())
    matrix, vector = _balance_map(weight, bias, tuple(channels), goal)
    return means @ matrix.to(means) + vector.to(means)


@functools.lru_cache(maxsize=64)
def _balance_map(weight: tuple, bias: tuple, channels: tuple, target: tuple | None) -> tuple:
    """offsets = means @ matrix + vector, for factors (weight [C, 3] and bias [3], as tuples) and a target.

    The preview mean is means @ W + bias, the wanted change (goal - current) is affine in it (neutral: the luma
    gray minus the color), and the least-norm offsets are that change times pinv(W[channels]): so the whole solve
    folds into one affine map of the channel means, computed once per factors and target.
    """
    w, b = torch.tensor(weight, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    lift = torch.zeros(3, w.shape[0], dtype=torch.float64)
    lift[:, list(channels)] = torch.linalg.pinv(w[list(channels)])
    if target is None:
        to_change = torch.tensor(REC709_LUMA, dtype=torch.float64)[:, None].expand(3, 3) - torch.eye(3)
        return w @ to_change @ lift, b @ to_change @ lift
    return -w @ lift, (torch.tensor(target, dtype=torch.float64) - b) @ lift


def scaled_affine(affine: RgbAffine, fmt: LatentFormat) -> RgbAffine:
    """The same map taking SCALED latents: raw = scaled / scale + shift."""
    if fmt.uniform:
        weight = affine.weight / fmt.scale
        bias = affine.bias + fmt.shift * affine.weight.sum(-2)
    else:
        scale, shift = fmt.unit_vectors(affine.weight.dtype)
        weight = affine.weight / scale[:, None]
        bias = affine.bias + shift @ affine.weight
    return RgbAffine(weight, bias, affine.label + " (scaled input)", affine.block)


def parse_color(text: str) -> torch.Tensor | None:
    """'neutral' -> None; '#rrggbb' (or 'rrggbb') -> [3] in 0..1."""
    value = text.strip().lower()
    if value in ("neutral", "", "auto"):
        return None
    match = re.fullmatch(r"#?([0-9a-f]{6})", value)
    require(match is not None, f"Target color '{excerpt(text)}' is not understood.",
            "Write 'neutral' (a gray of the same brightness) or a hex color such as #808080.")
    digits = match.group(1)
    return torch.tensor([int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)])


def frames_as_items(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W], item-major: each frame becomes an item of its own."""
    batch, channels, frames, height, width = x.shape
    return x.transpose(1, 2).reshape(batch * frames, channels, height, width)


def items_as_frames(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of frames_as_items, for a video latent of `shape`."""
    batch, channels, frames, height, width = shape
    return x.reshape(batch, frames, channels, height, width).transpose(1, 2).contiguous()

