"""Schedules of corrections during sampling: operations in windows of the sampling progress, their text form, the
blog's preset, and the compiled steps a sampling patch runs on each x0 prediction."""
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .channels import chosen_channels, parse_channels, parse_number
from .correct_ops import (CLAMP_MODES, FORMAT_DEFAULTS, center, check_boundary, check_clamp_limits, color_balance,
                          format_boundary, maximize, parse_color, scaled_affine, soft_clamp)
from .errors import LatentLabInputError, require
from .formats import LatentFormat, RgbAffine
from .validate import excerpt

OPERATIONS = ("soft_clamp", "center", "maximize", "color_balance")
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
    require(kind in OPERATIONS, f"Unknown operation '{excerpt(kind)}'.", f"Use one of: {', '.join(OPERATIONS)}.")
    require(0 <= start <= 100 and 0 <= end <= 100,
            f"The window {start:g}-{end:g}% of '{kind}' is outside 0-100%.", "Windows are percent of sampling.")
    require(start <= end, f"The window of '{kind}' starts at {start:g}% but ends earlier, at {end:g}%.",
            "Write it as start-end with start <= end, for example 90-100.")
    require(math.isfinite(strength) and 0 <= strength <= 1,
            f"Strength {strength} of '{kind}' is outside 0..1.", "0 turns the operation off, 1 applies it fully.")
    unknown = sorted(set(options) - set(OPTION_DEFAULTS[kind]))
    require(not unknown, f"'{kind}' has no option {', '.join(excerpt(key) for key in unknown)}.",
            f"Its options: {', '.join(OPTION_DEFAULTS[kind])}, strength.")
    require(options.get("boundary") != "auto" or kind == "maximize", f"'{kind}' has no boundary=auto.",
            "Give the boundary as a number in scaled units, such as boundary=4 (auto is for maximize).")
    for key in ("channel", "global"):
        require(key not in options or 0 <= float(options[key]) <= 1,
                f"{key}={options.get(key)} of '{kind}' is outside 0..1.", "0 leaves the means alone, 1 removes them.")
    # Windows to a millionth of a percent, so their text form reads back exactly.
    return Operation(kind, round(float(start), 6), round(float(end), 6), float(strength), dict(options))


def blog_schedule(maximize_end: bool = True) -> tuple:
    """The blog's callback schedule (t > 950 clamp, t > 700 center, 1 < t < 100 center + maximize), in percent.

    A diffusers timestep t (999 = pure noise ... 0 = clean) is 100 x (999 - t) / 999 percent of sampling, exactly
    ComfyUI's own percent for discrete models (percent_to_sigma(p) = sigma at t = (1 - p) x 999). Each window holds
    exactly the integer timesteps the blog's condition holds (t = 951 is 4.80%, 950 is 4.90%...), rounded to one
    decimal. The blog corrected the noisy latent after each step; here the same windows act on the x0 prediction of
    the step.
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


# ---------------------------------------------------------------------------------------------- text form

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
            raise LatentLabInputError(f"Schedule line {number} ('{excerpt(line)}'): {error.problem}",
                                      error.fix) from None
    return tuple(ops)


def _parse_line(line: str) -> Operation:
    kind, _, rest = line.partition(" ")
    rest = rest.strip()
    require(kind in OPERATIONS, f"unknown operation '{excerpt(kind)}'.",
            f"Start the line with one of: {', '.join(OPERATIONS)}.")
    window = _WINDOW.match(rest)
    require(window is not None, "no window.", "Write the window after the operation, e.g. 'center 0-30%'.")
    start, end = float(window.group(1)), float(window.group(2))
    strength, options = 1.0, {}
    for token in rest[window.end():].split():
        key, equals, value = token.partition("=")
        require(equals == "=" and key and value, f"'{excerpt(token)}' is not key=value.",
                "Write options as key=value, no spaces.")
        require(key != "strength" or "strength" not in options, "strength given twice.")
        if key == "strength":
            strength = parse_number(value, "strength")
        elif key in _TEXT_OPTIONS:
            options[key] = value
        elif key in _BOOL_OPTIONS:
            require(value.lower() in ("yes", "no", "true", "false", "1", "0"),
                    f"{key}={excerpt(value)} is not yes or no.")
            options[key] = value.lower() in ("yes", "true", "1")
        elif key == "boundary" and value == "auto":
            options[key] = "auto"
        else:
            options[key] = parse_number(value, excerpt(key))
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


def _compile(op: Operation, fmt: LatentFormat, affine: RgbAffine) -> Callable:
    count = fmt.channels
    if op.kind == "soft_clamp":
        _check_clamp_defaults(op, fmt)
        threshold, boundary, mode, relative = (float(op.option("threshold")), float(op.option("boundary")),
                                               str(op.option("mode")), bool(op.option("relative")))
        require(mode in CLAMP_MODES, f"unknown mode '{excerpt(mode)}'.", f"Use one of {CLAMP_MODES}.")
        check_clamp_limits(threshold, boundary, relative)
        return lambda x, amount: soft_clamp(x, threshold, boundary, mode, relative, amount)
    if op.kind == "center":
        strengths = parse_channels(str(op.option("channels")), count, fmt, "center", float(op.option("channel")))
        global_strength = float(op.option("global"))
        return lambda x, amount: center(x, strengths, global_strength, strength=amount)
    if op.kind == "maximize":
        channels = chosen_channels(str(op.option("channels")), count, fmt, "maximize")
        boundary = op.option("boundary")
        boundary = format_boundary(fmt) if boundary == "auto" else float(boundary)
        check_boundary(boundary)
        return lambda x, amount: maximize(x, boundary, channels, amount)
    channels = chosen_channels(str(op.option("channels")), count, fmt, "color_balance")
    target = parse_color(str(op.option("target")))
    return lambda x, amount: color_balance(x, affine, target, channels, amount)


def _check_clamp_defaults(op: Operation, fmt: LatentFormat) -> None:
    """The default limits (3.5 and 4, scaled) are where SD1.x and SDXL latents end; other formats give their own."""
    if fmt.key in FORMAT_DEFAULTS or op.option("relative"):
        return
    missing = [key for key in ("threshold", "boundary") if key not in op.options]
    require(not missing, f"soft_clamp has no default {' or '.join(missing)} for the {fmt.label} format.",
            "Give threshold= and boundary= in scaled units (Latent Stats with units scaled shows how far this "
            "model's latents reach), or relative=yes with fractions of each item's max|x|.")


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
