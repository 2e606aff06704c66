"""Channel corrections of latents in SCALED units, and schedules of them during sampling.

Every operation works on each batch item on its own, reduces over every dimension after the channel one
(so [B, C, H, W] and [B, C, T, H, W] both work) and returns a new tensor: inputs are never written.
Thresholds and boundaries are in the units samplers use, (raw - shift) x scale, as in the SDXL-latent blog
(SDXL ends near +-4 there). The operations take x in any units with `scale` and `shift` saying how they map to
scaled units (default: x is scaled already), so a node can correct a raw LATENT without a scaled copy.

Center, maximize and color balance are one gain and offset per item and channel: a reduction, then one pass.
Soft clamp finds extremes first, then moves what lies beyond the threshold, sparsely or densely (see
soft_clamp). The per-item figures between the reductions and the passes are a handful of numbers, computed in
numpy on the host (see _host).
"""
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import LatentLabInputError, require
from .formats import LatentFormat, RgbAffine
from .validate import check_finite

OPERATIONS = ("soft_clamp", "center", "maximize", "color_balance")
CLAMP_MODES = ("pixel", "channel")
REC709_LUMA = (0.2126, 0.7152, 0.0722)

# Channel choices when a node or schedule says "auto". The blog leaves SDXL's pattern channel (3) alone when it
# maximizes; SD1.x channel meanings are not documented, so every channel is scaled (or shifted) alike there.
FORMAT_DEFAULTS = {
    "sdxl": {"boundary": 4.0, "channels": {"center": "all", "maximize": "0,1,2", "color_balance": "0,1,2"}},
    "sd15": {"boundary": 4.0, "channels": {"center": "all", "maximize": "all", "color_balance": "all"}},
}
DEFAULT_BOUNDARY = 4.0
MIN_PEAK = 1e-12  # maximize leaves channels whose max|x| is below this alone
TINY = 1e-30


def _work(x: torch.Tensor) -> torch.Tensor:
    require(x.ndim >= 3, f"Expected a latent [batch, channels, ...]; got shape {tuple(x.shape)}.")
    return x.float()


def _result(x: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """work as a new tensor of x's dtype."""
    return work.clone() if work is x else work.to(x.dtype)


def _cells(x: torch.Tensor) -> torch.Tensor:
    """[B, C, N]: a view when x is contiguous."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _host(values: torch.Tensor) -> np.ndarray:
    """Per-item and per-channel figures ([B] or [B, C]) as float64 on the host.

    The arithmetic on these few numbers runs in numpy: a torch call costs several microseconds whatever its
    size, about a third of copying a whole [4, 4, 128, 128] latent on the CPU, and float64 is exact enough.
    """
    return values.detach().cpu().numpy().astype(np.float64)


def _host_means(work: torch.Tensor) -> np.ndarray:
    """[B, C] channel means on the host. A sum, divided there: cheaper on the CPU than torch's mean, which adds a
    second kernel."""
    cells = _cells(work)
    return _host(cells.sum(dim=2)) / cells.shape[2]


def _on(values: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """[B] or [B, C] host figures as a float32 tensor on x's device, shaped to broadcast against x."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(x.device)
    return tensor.view(*values.shape, *([1] * (x.ndim - values.ndim)))


def _apply(x: torch.Tensor, work: torch.Tensor, gain: np.ndarray | None, offset: np.ndarray | None) -> torch.Tensor:
    """gain * x + offset per item and channel ([B, C] each, None: 1 or 0)."""
    # Two plain passes: addcmul with broadcast operands is several times slower than mul then add on the CPU.
    out = work if gain is None else work * _on(gain, work)
    if offset is not None:
        out = out + _on(offset, work) if out is work else out.add_(_on(offset, work))
    return _result(x, out)


def _require_finite(x: torch.Tensor, *summaries: np.ndarray) -> None:
    """The input check, folded into reductions the operation makes anyway: NaN and inf reach every mean, min
    and max. A non-finite mean of finite values (a float32 overflow) passes the full check that follows it."""
    if not all(np.isfinite(summary).all() for summary in summaries):
        check_finite(x, "LATENT")


def check_strength(value: float, what: str = "strength") -> None:
    require(math.isfinite(value) and 0 <= value <= 1, f"The {what} {value} is outside 0..1.",
            "0 leaves the latent as it is, 1 applies the correction fully.")


def lerp(x: torch.Tensor, corrected: torch.Tensor, strength: float) -> torch.Tensor:
    """Blend toward a correction; strength 0 gives x itself, 1 the correction."""
    if strength == 0:
        return x
    if strength == 1:
        return corrected
    return x + (corrected - x) * strength


def channel_means(x: torch.Tensor) -> torch.Tensor:
    """[B, C] mean of each item's channels, float32 on x's device (MPS has no float64)."""
    return _cells(_work(x)).mean(dim=2)


def _extremes(work: torch.Tensor) -> tuple:
    """Each item's and channel's min and max, [B, C] on the host."""
    cells = _cells(work)
    # amin and amax each run far faster than aminmax (and than vector_norm(ord=inf)) on the CPU
    return _host(cells.amin(dim=2)), _host(cells.amax(dim=2))


# ---------------------------------------------------------------------------------------------- operations
# reject_nonfinite: raise LatentLabInputError on NaN or inf input, found from the operation's own reduction
# (the nodes use this instead of a separate scan of the whole latent).

def center(x: torch.Tensor, channel_strengths: Sequence[float], global_strength: float = 1.0,
           scale: float = 1.0, shift: float = 0.0, reject_nonfinite: bool = False,
           strength: float = 1.0) -> torch.Tensor:
    """Subtract each channel's mean x its strength (0 leaves a channel alone), then the item's mean x global;
    strength blends from x (0) to that correction (1), as every operation's strength does.

    Offsets are one per item and channel and do not depend on the scale (see _center_map).
    """
    require(len(channel_strengths) == x.shape[1],
            f"{len(channel_strengths)} channel strengths for a {x.shape[1]}-channel latent.")
    for value, what in ((global_strength, "global strength"), (strength, "strength"), *(
            (s, "channel strength") for s in channel_strengths)):
        check_strength(value, what)
    work = _work(x)
    means = _host_means(work)
    if reject_nonfinite:
        _require_finite(x, means)
    offsets = (means - shift) @ _center_map(tuple(channel_strengths), float(global_strength))
    return _apply(x, work, None, offsets * strength)


@functools.lru_cache(maxsize=64)
def _center_map(strengths: tuple, global_strength: float) -> np.ndarray:
    """offsets = (means - shift) @ this [C, C] matrix.

    With d = mean - shift and s the channel strengths: offset = -d x s - global x mean over channels of d x (1 - s).
    """
    s = np.asarray(strengths, dtype=np.float64)
    return -np.diag(s) - global_strength / len(s) * np.outer(1 - s, np.ones(len(s)))


def check_clamp_limits(threshold: float, boundary: float) -> None:
    require(math.isfinite(threshold) and math.isfinite(boundary) and 0 <= threshold < boundary,
            f"Soft clamp needs 0 <= threshold < boundary; got threshold {threshold}, boundary {boundary}.",
            "Set the threshold below the boundary (the blog uses 3.5 and 4 in scaled units).")


def _pull(reach, limit, start, upper: bool):
    """The share of a value's excess over `start` that the clamp removes (numpy, or torch in place of reach).

    1 - the blog's slope (b - t) / (M - t) with M = max(reach, b), written (M - b) / (M - t): exactly 0 wherever
    the reach stays within the boundary b, so those values come out bit for bit. On the lower side (upper False)
    reach is a minimum, M = min(reach, b) and b, t are the lower limits; the ratio is positive on both sides.
    M - t is 0 for an all-zero item in relative mode (b = t = 0), or where b and t round to one float32: kept off
    zero, so nothing moves there rather than becoming NaN.
    """
    if isinstance(reach, np.ndarray):
        beyond = np.maximum(reach - limit, 0) if upper else np.minimum(reach - limit, 0)
        spread = beyond + (limit - start)
        return beyond / (np.maximum(spread, TINY) if upper else np.minimum(spread, -TINY))
    beyond = (reach - limit).clamp_(min=0) if upper else (reach - limit).clamp_(max=0)
    spread = (reach.clamp_(min=limit) if upper else reach.clamp_(max=limit)).sub_(start)
    spread = spread.clamp_(min=TINY) if upper else spread.clamp_(max=-TINY)
    return beyond.div_(spread)


@dataclass(frozen=True)
class ClampLimits:
    """Each item's boundary and threshold in x's units, above and below the shift: float32 [B] each, as the
    latent (comparing float32 values against float64 limits costs numpy a conversion of every value)."""
    upper_b: np.ndarray
    upper_t: np.ndarray
    lower_b: np.ndarray
    lower_t: np.ndarray


def _pixel_extremes(work: torch.Tensor) -> tuple:
    """Each item's min and max ([B, 1] on the host), from each pixel's across channels ([B, 1, ...] tensors)."""
    low, high = work.detach().amin(dim=1, keepdim=True), work.detach().amax(dim=1, keepdim=True)
    per_item = (lambda v, reduce: _host(reduce(v.reshape(v.shape[0], -1), dim=1, keepdim=True)))
    return per_item(low, torch.amin), per_item(high, torch.amax), low, high


def _pulled(values, top, bottom, upper_t, lower_t):
    """values - pull x excess over the threshold, each side with its own pull (numpy or torch, broadcasting)."""
    if isinstance(values, np.ndarray):
        return values - top * np.maximum(values - upper_t, 0) - bottom * np.minimum(values - lower_t, 0)
    # Two latent-sized buffers in all: on the CPU a fresh one can cost as much as the pass that fills it.
    above = (values - upper_t).clamp_(min=0).mul_(top)
    out = (values - lower_t).clamp_(max=0).mul_(bottom).add_(above)
    return out.neg_().add_(values)  # values - out, in place (out= refuses tensors that need grad)


def _sparse_pixel_clamp(work, limits: ClampLimits, extremes: tuple, strength: float) -> torch.Tensor:
    """A copy of work with just the pixels whose extreme passes the boundary rewritten (mode "pixel", CPU)."""
    pixel_low, pixel_high = (v.reshape(v.shape[0], -1).numpy() for v in extremes[2:])
    moving = np.flatnonzero((pixel_high > limits.upper_b[:, None]) | (pixel_low < limits.lower_b[:, None]))
    out = work.detach().clone(memory_format=torch.contiguous_format)
    if moving.size == 0:
        return out
    item, pixel = np.divmod(moving, pixel_high.shape[1])
    top = _pull(pixel_high[item, pixel], limits.upper_b[item], limits.upper_t[item], True)[:, None] * strength
    bottom = _pull(pixel_low[item, pixel], limits.lower_b[item], limits.lower_t[item], False)[:, None] * strength
    cells = out.numpy().reshape(out.shape[0], out.shape[1], -1)
    cells[item, :, pixel] = _pulled(cells[item, :, pixel], top, bottom, limits.upper_t[item, None],
                                    limits.lower_t[item, None])
    return out


def _dense_clamp(work, limits: ClampLimits, extremes: tuple, strength: float) -> torch.Tensor:
    """x - pull x excess for every value, in torch on work's device. extremes: _extremes' (mode "channel") or
    _pixel_extremes' (mode "pixel")."""
    shared = (limits.upper_b == limits.upper_b[0]).all()  # one number for every item is cheaper than a tensor
    per_item = (lambda v: float(v[0])) if shared else (lambda v: _on(v, work))
    if len(extremes) == 2:
        low, high = extremes
        top = _on(_pull(high, limits.upper_b[:, None], limits.upper_t[:, None], True) * strength, work)
        bottom = _on(_pull(low, limits.lower_b[:, None], limits.lower_t[:, None], False) * strength, work)
    else:  # _pull works in place on the pixel extremes: nothing reads them after this
        top = _pull(extremes[3], per_item(limits.upper_b), per_item(limits.upper_t), True)
        bottom = _pull(extremes[2], per_item(limits.lower_b), per_item(limits.lower_t), False)
        if strength != 1:
            top, bottom = top.mul_(strength), bottom.mul_(strength)
    return _pulled(work, top, bottom, per_item(limits.upper_t), per_item(limits.lower_t))


def soft_clamp(x: torch.Tensor, threshold: float = 3.5, boundary: float = 4.0, mode: str = "pixel",
               relative: bool = False, strength: float = 1.0, scale: float = 1.0, shift: float = 0.0,
               reject_nonfinite: bool = False, sparse: bool | None = None) -> torch.Tensor:
    """Map values beyond +-threshold onto [threshold, boundary] linearly, each side on its own.

    The range mapped is [threshold, max(M, boundary)], M being the largest value at that pixel across channels
    (mode "pixel", the blog's choice) or in that channel of the item (mode "channel"). Taking max(M, boundary)
    instead of the blog's M means a value is never pushed outward, and an item already inside +-boundary is left
    exactly as it is (the blog's early exit, tied to the boundary rather than to a hard-coded 4).
    relative: boundary is a fraction of the item's max|x| and threshold a fraction of that boundary (the blog's
    first-steps clamp uses 0.998 and 0.998). Values that do not move are copied bit for bit.

    Mode "pixel" on the CPU (sparse, unless told otherwise) copies the latent and rewrites only the pixels whose
    extreme passes the boundary, found from each pixel's min and max across channels. Everywhere else (dense)
    every value goes through x - pull x excess, with no data-dependent indexing: on a GPU that would stall each
    sampling step, and in mode "channel" finding the values beyond the threshold costs more than the passes.
    """
    require(mode in CLAMP_MODES, f"Unknown soft clamp mode '{mode}'.", f"Use one of {CLAMP_MODES}.")
    if relative:
        require(boundary > 0 and 0 <= threshold < 1,
                f"Relative soft clamp needs boundary > 0 and 0 <= threshold < 1; got {threshold}, {boundary}.",
                "Both are fractions: boundary of the item's max|x|, threshold of the boundary.")
    else:
        check_clamp_limits(threshold, boundary)
    check_strength(strength)
    work = _work(x)
    sparse = mode == "pixel" and (work.device.type == "cpu" if sparse is None else sparse)
    extremes = _pixel_extremes(work) if mode == "pixel" else _extremes(work)
    low, high = extremes[:2]
    if reject_nonfinite:
        _require_finite(x, low, high)
    peak = np.maximum(high - shift, shift - low).max(axis=1) * scale      # [B], scaled
    b = peak * boundary if relative else np.full_like(peak, boundary)     # [B], scaled
    t = b * threshold if relative else np.full_like(peak, threshold)
    if not strength or not (peak > b).any():
        return _result(x, work)
    limits = ClampLimits(*(np.float32(v) for v in (shift + b / scale, shift + t / scale, shift - b / scale,
                                                   shift - t / scale)))
    if sparse:
        return _result(x, _sparse_pixel_clamp(work, limits, extremes, strength))
    return _result(x, _dense_clamp(work, limits, extremes, strength))


def maximize(x: torch.Tensor, boundary: float, channels: Sequence[int], strength: float = 1.0,
             scale: float = 1.0, shift: float = 0.0, reject_nonfinite: bool = False) -> torch.Tensor:
    """Scale the chosen channels by one factor per item so their max|x| (scaled) equals the boundary.

    Items whose chosen channels are (almost) empty, max|x| <= MIN_PEAK, are left alone.
    """
    require(boundary > 0 and math.isfinite(boundary), f"Maximize needs a boundary > 0; got {boundary}.")
    require(len(channels) > 0, "Maximize needs at least one channel.")
    check_strength(strength)
    work = _work(x)
    chosen = list(channels)
    low, high = _extremes(work)                       # every channel, so NaN anywhere is seen
    if reject_nonfinite:
        _require_finite(x, low, high)
    peak = np.maximum(high - shift, shift - low)[:, chosen].max(axis=1) * scale   # [B], scaled
    # An item with no content in these channels stays as it is rather than having rounding noise blown up.
    factor = np.where(peak > MIN_PEAK, boundary / np.maximum(peak, MIN_PEAK), 1.0)
    gain = np.ones(low.shape)
    gain[:, chosen] = (1 + strength * (factor - 1))[:, None]
    # gain about the shift: y_scaled = gain * x_scaled means y = gain * x + shift * (1 - gain)
    return _apply(x, work, gain, shift * (1 - gain) if shift else None)


def mean_color(x: torch.Tensor, affine: RgbAffine) -> torch.Tensor:
    """Mean color of each item's unclamped linear preview, [B, 3]; affine maps x's units to RGB 0..1."""
    means = channel_means(x)
    return means @ affine.weight.to(means.device).float() + affine.bias.to(means.device).float()


def neutral_of(colors: torch.Tensor) -> torch.Tensor:
    """The gray with each color's Rec. 709 luma: removes a cast, keeps brightness."""
    luma = colors @ torch.tensor(REC709_LUMA, dtype=colors.dtype, device=colors.device)
    return luma[:, None].expand(-1, 3)


@functools.lru_cache(maxsize=64)
def _balance_map(weight: bytes, bias: bytes, channels: tuple, target: tuple | None) -> tuple:
    """offsets = means @ matrix + vector, for factors (weight [C, 3], bias [3] as float64 bytes) and a target.

    The preview mean is means @ W + bias, the wanted change (goal - current) is affine in it (neutral: the
    luma gray minus the color), and the least-norm offsets are that change times pinv(W[channels]): so the
    whole solve folds into one affine map of the channel means, computed once per factors and target.
    """
    w = np.frombuffer(weight, dtype=np.float64).reshape(-1, 3)
    b = np.frombuffer(bias, dtype=np.float64)
    lift = np.zeros((3, w.shape[0]))
    lift[:, list(channels)] = np.linalg.pinv(w[list(channels)])
    if target is None:
        to_change = np.repeat(np.asarray(REC709_LUMA)[:, None], 3, axis=1) - np.eye(3)
        return w @ to_change @ lift, b @ to_change @ lift
    return -w @ lift, (np.asarray(target) - b) @ lift


def balance_offsets(means: np.ndarray, weight: np.ndarray, bias: np.ndarray, target: torch.Tensor | None,
                    channels: Sequence[int]) -> np.ndarray:
    """[B, C] offsets (float64), in the units of the channel means `means` [B, C], zero outside `channels`, of
    least norm that best move each preview mean (means @ weight + bias, factors as float64 host arrays) to the
    target. target: [3] in 0..1, or None for each item's neutral gray. Exact whenever the chosen channels'
    factor rows span RGB (3+ independent channels); a least-squares best fit otherwise.
    """
    require(len(channels) > 0, "Color balance needs at least one channel.")
    goal = None if target is None else tuple(float(v) for v in torch.as_tensor(target).flatten())
    require(goal is None or len(goal) == 3, "The target color needs three values (RGB).")
    matrix, vector = _balance_map(weight.tobytes(), bias.tobytes(), tuple(channels), goal)
    return means @ matrix + vector


@dataclass(frozen=True)
class Balanced:
    """A color-balanced latent, and each item's linear-preview mean color before and after (float64 [B, 3])."""
    latent: torch.Tensor
    before: np.ndarray
    after: np.ndarray


def balance(x: torch.Tensor, affine: RgbAffine, target: torch.Tensor | None, channels: Sequence[int],
            strength: float = 1.0, reject_nonfinite: bool = False) -> Balanced:
    """Shift chosen channels so each item's linear-preview mean color becomes the target (see balance_offsets).

    The affine takes x's units (raw values with fmt.rgb_affine, scaled ones with scaled_affine).
    """
    require(affine.channels == x.shape[1],
            f"The latent has {x.shape[1]} channels but the factors '{affine.label}' expect {affine.channels}.",
            "Pick factors made for this latent's format.")
    check_strength(strength)
    work = _work(x)
    means = _host_means(work)
    if reject_nonfinite:
        _require_finite(x, means)
    weight, bias = _host(affine.weight), _host(affine.bias)
    offsets = balance_offsets(means, weight, bias, target, channels) * strength
    return Balanced(_apply(x, work, None, offsets), means @ weight + bias, (means + offsets) @ weight + bias)


def color_balance(x: torch.Tensor, affine: RgbAffine, target: torch.Tensor | None,
                  channels: Sequence[int], strength: float = 1.0) -> torch.Tensor:
    """The balanced latent alone (see balance)."""
    return balance(x, affine, target, channels, strength).latent


def scaled_affine(affine: RgbAffine, fmt: LatentFormat) -> RgbAffine:
    """The same map taking SCALED latents: raw = scaled / scale + shift."""
    weight = affine.weight / fmt.scale
    bias = affine.bias + fmt.shift * affine.weight.sum(0)
    return RgbAffine(weight, bias, affine.label + " (scaled input)")


def parse_color(text: str) -> torch.Tensor | None:
    """'neutral' -> None; '#rrggbb' (or 'rrggbb') -> [3] in 0..1."""
    value = text.strip().lower()
    if value in ("neutral", "", "auto"):
        return None
    match = re.fullmatch(r"#?([0-9a-f]{6})", value)
    require(match is not None, f"Target color '{text}' is not understood.",
            "Write 'neutral' (a gray of the same brightness) or a hex color such as #808080.")
    digits = match.group(1)
    return torch.tensor([int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)])


# ---------------------------------------------------------------------------------------------- channels

def channel_names_for(fmt: LatentFormat | None, count: int) -> tuple:
    return tuple(fmt.channel_names) if fmt is not None and fmt.channels == count else tuple(f"c{i}" for i in range(count))


def parse_channels(spec: str, count: int, fmt: LatentFormat | None = None, operation: str = "center",
                   default_strength: float = 1.0) -> list[float]:
    """A channel choice -> one strength per channel (0 = left alone).

    spec: 'auto' (the format's default for this operation), 'all', or a comma list of indices (0-based), ranges
    ('0-2') and channel names, each optionally with ':strength' ('0:0.5, luminance').
    """
    text = spec.strip().lower()
    if text == "auto":
        defaults = FORMAT_DEFAULTS.get(fmt.key) if fmt is not None else None
        require(defaults is not None,
                f"The channels of a {count}-channel latent"
                + (f" ({fmt.label})" if fmt is not None else "") + " have no known meanings, so 'auto' cannot choose.",
                f"Set channels explicitly: 'all', or indices such as '0,1,2' (0..{count - 1}).")
        text = defaults["channels"][operation]
    return list(_channel_strengths(text, count, channel_names_for(fmt, count), float(default_strength)))


@functools.lru_cache(maxsize=256)
def _channel_strengths(text: str, count: int, names: tuple, default_strength: float) -> tuple:
    if text == "all":
        return (default_strength,) * count
    require(text != "", "No channels chosen.", "Write 'auto', 'all' or a list such as '0,1,2'.")
    strengths = [0.0] * count
    for part in text.split(","):
        item, _, amount = part.strip().partition(":")
        value = _number(amount, f"channel strength '{part.strip()}'") if amount else default_strength
        check_strength(value, f"channel strength of '{part.strip()}'")
        for index in _channel_indices(item.strip(), count, names):
            strengths[index] = value
    return tuple(strengths)


def selected(strengths: Sequence[float]) -> list[int]:
    return [i for i, s in enumerate(strengths) if s != 0]


def _channel_indices(item: str, count: int, names: tuple) -> list[int]:
    lowered = [n.lower() for n in names]
    if item in lowered:
        return [lowered.index(item)]
    generic = re.fullmatch(r"c?(\d+)", item)
    if generic:
        index = int(generic.group(1))
        _check_index(index, count, names)
        return [index]
    span = re.fullmatch(r"c?(\d+)\s*-\s*c?(\d+)", item)
    if span:
        first, last = int(span.group(1)), int(span.group(2))
        require(first <= last, f"Channel range '{item}' runs backwards.", f"Write it as '{last}-{first}'.")
        _check_index(last, count, names)
        return list(range(first, last + 1))
    raise LatentLabInputError(f"Unknown channel '{item}'.", _channel_help(count, names))


def _check_index(index: int, count: int, names: tuple) -> None:
    require(0 <= index < count, f"Channel {index} does not exist in a {count}-channel latent.",
            _channel_help(count, names))


def _channel_help(count: int, names: tuple) -> str:
    named = [n for n in names if n != f"c{names.index(n)}"]
    return (f"Use indices 0..{count - 1}" + (f" or names {', '.join(named)}" if named else "")
            + ", 'all' or 'auto'.")


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LatentLabInputError(f"The {what} is not a number.", "Write a number such as 0.5.") from None
    require(math.isfinite(value), f"The {what} is not finite.")
    return value


# ---------------------------------------------------------------------------------------------- schedules

OPTION_DEFAULTS = {
    "soft_clamp": {"threshold": 3.5, "boundary": 4.0, "mode": "pixel", "relative": False},
    "center": {"channels": "auto", "channel": 1.0, "global": 1.0},
    "maximize": {"channels": "auto", "boundary": "auto"},
    "color_balance": {"channels": "auto", "target": "neutral"},
}


@dataclass(frozen=True)
class Operation:
    """One correction applied while start <= progress < end (percent of the run's steps), blended by strength."""
    kind: str
    start: float
    end: float
    strength: float = 1.0
    options: dict = field(default_factory=dict)

    def active(self, percent: float) -> bool:
        return self.start <= percent < self.end

    def option(self, key: str):
        return self.options.get(key, OPTION_DEFAULTS[self.kind][key])


def operation(kind: str, start: float, end: float, strength: float = 1.0, **options) -> Operation:
    """A checked Operation."""
    require(kind in OPERATIONS, f"Unknown operation '{kind}'.", f"Use one of: {', '.join(OPERATIONS)}.")
    require(0 <= start <= 100 and 0 <= end <= 100,
            f"The window {start:g}-{end:g}% of '{kind}' is outside 0-100%.", "Windows are percent of sampling.")
    require(start <= end, f"The window of '{kind}' starts at {start:g}% but ends earlier, at {end:g}%.",
            "Write it as start-end with start <= end, for example 90-100.")
    require(math.isfinite(strength) and 0 <= strength <= 1,
            f"Strength {strength} of '{kind}' is outside 0..1.", "0 turns the operation off, 1 applies it fully.")
    unknown = sorted(set(options) - set(OPTION_DEFAULTS[kind]))
    require(not unknown, f"'{kind}' has no option {', '.join(unknown)}.",
            f"Its options: {', '.join(OPTION_DEFAULTS[kind])}, strength.")
    require(options.get("boundary") != "auto" or kind == "maximize", f"'{kind}' has no boundary=auto.",
            "Give the boundary as a number in scaled units, such as boundary=4 (auto is for maximize).")
    for key in ("channel", "global"):
        require(key not in options or 0 <= float(options[key]) <= 1,
                f"{key}={options.get(key)} of '{kind}' is outside 0..1.", "0 leaves the means alone, 1 removes them.")
    # Windows to a millionth of a percent, so their text form reads back exactly.
    return Operation(kind, round(float(start), 6), round(float(end), 6), float(strength), dict(options))


def timestep_percent(timestep: float, last: int = 999) -> float:
    """A diffusers timestep (last = pure noise ... 0 = clean) as percent of sampling.

    This is exactly ComfyUI's own percent for discrete models (percent_to_sigma(p) = sigma at t = (1 - p) x 999),
    so on the "model" timeline a window reproduces a condition on the timestep of the step being corrected; on
    the "run" timeline it matches where the schedule spaces timesteps evenly (the "normal" scheduler).
    """
    return 100.0 * (last - timestep) / last


def blog_schedule(maximize_end: bool = True) -> tuple:
    """The blog's callback schedule (t > 950 clamp, t > 700 center, 1 < t < 100 center + maximize), in percent.

    Each window holds exactly the integer timesteps the blog's condition holds (timestep_percent of 951 is 4.80,
    of 950 is 4.90...), rounded to one decimal. The blog corrected the noisy latent after each step; here the same
    windows act on the x0 prediction of the step.
    """
    ops = [
        operation("soft_clamp", 0, 4.9, threshold=0.998, boundary=0.998, relative=True),
        operation("center", 0, 29.9, channel=0.8, **{"global": 0.8}),
        operation("center", 90, 99.8, channel=0.6, **{"global": 1.0}),
    ]
    if maximize_end:
        ops.append(operation("maximize", 90, 99.8))
    return tuple(ops)


PRESETS = {
    "blog": lambda: blog_schedule(True),
    "blog without maximize": lambda: blog_schedule(False),
}


def _number_text(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _percent_text(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _number_text(value)
    return str(value).replace(" ", "")


def schedule_text(schedule: Sequence[Operation]) -> str:
    """One line per operation: `kind start-end% strength=s key=value ...`; parse_schedule reads it back."""
    lines = []
    for op in schedule:
        parts = [f"{op.kind:<13}", f"{_percent_text(op.start)}-{_percent_text(op.end)}%",
                 f"strength={_number_text(op.strength)}"]
        parts += [f"{k}={_format_value(v)}" for k, v in op.options.items()]
        lines.append(" ".join(parts))
    return "\n".join(lines)


_WINDOW = re.compile(r"(\d+(?:\.\d+)?)%?\s*-\s*(\d+(?:\.\d+)?)%?")
_COMMENT = re.compile(r"(?:^|\s)#")  # a '#' after '=' is a hex color, not a comment
_TEXT_OPTIONS = {"channels", "target", "mode"}
_BOOL_OPTIONS = {"relative"}


def parse_schedule(text: str) -> tuple:
    """Read a schedule: one operation per line; '#' at the start of a word starts a comment.

        soft_clamp    0-5%    threshold=0.998 boundary=0.998 relative=yes
        center        0-30%   channel=0.8 global=0.8
        maximize      90-100% strength=0.5 boundary=4 channels=0,1,2
    """
    ops = []
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = _COMMENT.split(raw_line, 1)[0].strip()
        if not line:
            continue
        try:
            ops.append(_parse_line(line))
        except LatentLabInputError as error:
            raise LatentLabInputError(f"Schedule line {number} ('{line}'): {error.problem}", error.fix) from None
    return tuple(ops)


def _parse_line(line: str) -> Operation:
    kind, _, rest = line.partition(" ")
    rest = rest.strip()
    require(kind in OPERATIONS, f"unknown operation '{kind}'.", f"Start the line with one of: {', '.join(OPERATIONS)}.")
    window = _WINDOW.match(rest)
    require(window is not None, "no window.", "Write the window after the operation, e.g. 'center 0-30%'.")
    start, end = float(window.group(1)), float(window.group(2))
    strength, options = 1.0, {}
    for token in rest[window.end():].split():
        key, equals, value = token.partition("=")
        require(equals == "=" and key and value, f"'{token}' is not key=value.", "Write options as key=value, no spaces.")
        require(key != "strength" or "strength" not in options, "strength given twice.")
        if key == "strength":
            strength = _number(value, "strength")
        elif key in _TEXT_OPTIONS:
            options[key] = value
        elif key in _BOOL_OPTIONS:
            require(value.lower() in ("yes", "no", "true", "false", "1", "0"), f"{key}={value} is not yes or no.")
            options[key] = value.lower() in ("yes", "true", "1")
        elif key == "boundary" and value == "auto":
            options[key] = "auto"
        else:
            options[key] = _number(value, key)
    return operation(kind, start, end, strength, **options)


# ---------------------------------------------------------------------------------------------- compiled schedules

@dataclass(frozen=True)
class Step:
    """An operation with its channels, limits and factors resolved for one format: run(x, strength)."""
    op: Operation
    run: Callable[[torch.Tensor, float], torch.Tensor]


def compile_schedule(schedule: Sequence[Operation], fmt: LatentFormat) -> tuple:
    """Resolve 'auto' choices and check every option now, so a bad schedule fails before sampling starts.
    Color balance uses the format's ComfyUI factors, taking scaled latents (x0 predictions are scaled)."""
    affine = scaled_affine(fmt.rgb_affine("comfyui"), fmt)
    steps = []
    for op in schedule:
        try:
            steps.append(Step(op, _compile(op, fmt, affine)))
        except LatentLabInputError as error:
            raise LatentLabInputError(f"Operation '{op.kind}' {op.start:g}-{op.end:g}%: {error.problem}",
                                      error.fix) from None
    return tuple(steps)


def format_boundary(fmt: LatentFormat | None) -> float:
    defaults = FORMAT_DEFAULTS.get(fmt.key) if fmt is not None else None
    return defaults["boundary"] if defaults else DEFAULT_BOUNDARY


def _compile(op: Operation, fmt: LatentFormat, affine: RgbAffine) -> Callable:
    count = fmt.channels
    if op.kind == "soft_clamp":
        threshold, boundary, mode, relative = (float(op.option("threshold")), float(op.option("boundary")),
                                               str(op.option("mode")), bool(op.option("relative")))
        require(mode in CLAMP_MODES, f"unknown mode '{mode}'.", f"Use one of {CLAMP_MODES}.")
        soft_clamp(torch.zeros(1, count, 1, 1), threshold, boundary, mode, relative)  # checks the limits
        return lambda x, amount: soft_clamp(x, threshold, boundary, mode, relative, amount)
    if op.kind == "center":
        strengths = parse_channels(str(op.option("channels")), count, fmt, "center", float(op.option("channel")))
        global_strength = float(op.option("global"))
        return lambda x, amount: center(x, strengths, global_strength, strength=amount)
    if op.kind == "maximize":
        channels = selected(parse_channels(str(op.option("channels")), count, fmt, "maximize"))
        boundary = op.option("boundary")
        boundary = format_boundary(fmt) if boundary == "auto" else float(boundary)
        require(boundary > 0, f"boundary {boundary} must be > 0.")
        require(channels, "no channels chosen.")
        return lambda x, amount: maximize(x, boundary, channels, amount)
    channels = selected(parse_channels(str(op.option("channels")), count, fmt, "color_balance"))
    require(channels, "no channels chosen.")
    target = parse_color(str(op.option("target")))
    return lambda x, amount: color_balance(x, affine, target, channels, amount)


def apply_schedule(x: torch.Tensor, steps: Sequence[Step], percents: Sequence[float],
                   strength: float = 1.0) -> torch.Tensor:
    """Run the steps whose window holds each item's progress (percent), in order; x itself if none applies."""
    out = x
    for step in steps:
        amount = step.op.strength * strength
        if amount == 0:
            continue
        active = [step.op.active(p) for p in percents]
        if all(active):
            out = step.run(out, amount)
        elif any(active):
            rows = torch.tensor(active, device=out.device)
            corrected = step.run(out[rows], amount)
            out = out.clone()
            out[rows] = corrected
    return out


# ---------------------------------------------------------------------------------------------- progress

def run_progress(sigma: float, sigmas: Sequence[float]) -> float:
    """Where a model call at `sigma` sits in a run over `sigmas` (decreasing, usually ending at 0): 0 <= p < 1.

    Step i of N (called at sigmas[i]) is at i / N; calls between two sigmas (Heun, DPM2, adaptive solvers)
    are placed by log-sigma interpolation, or linearly in the last interval when it ends at 0.
    """
    steps = len(sigmas) - 1
    if steps < 1 or sigma >= sigmas[0]:
        return 0.0
    for i in range(steps):
        high, low = sigmas[i], sigmas[i + 1]
        if high > low and high >= sigma >= low:
            if low > 0:
                fraction = (math.log(high) - math.log(sigma)) / (math.log(high) - math.log(low))
            else:
                fraction = (high - sigma) / high
            return min((i + fraction) / steps, math.nextafter(1.0, 0.0))
    nearest = min(range(len(sigmas)), key=lambda j: abs(sigmas[j] - sigma))
    return min(nearest / steps, math.nextafter(1.0, 0.0))


def model_progress(sigma: float, percent_to_sigma: Callable[[float], float], iterations: int = 40) -> float:
    """Percent of the model's whole noise range (ComfyUI's percent_to_sigma, inverted by bisection), 0 <= p < 1."""
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        if percent_to_sigma(middle) > sigma:
            low = middle
        else:
            high = middle
    return min(low, math.nextafter(1.0, 0.0))
