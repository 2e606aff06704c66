"""Which channels a correction touches: 'auto' (the format's default), 'all', or a list of indices, ranges and
channel names, each optionally with its own strength."""
import functools
import math
import re
from typing import Sequence

from .correct_ops import FORMAT_DEFAULTS, check_strength
from .errors import LatentLabInputError, require
from .formats import LatentFormat
from .validate import excerpt

NO_CHANNELS_FIX = "Write 'auto', 'all' or a list such as '0,1,2' (at least one channel with a strength above 0)."


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


def selected(strengths: Sequence[float]) -> list[int]:
    return [i for i, s in enumerate(strengths) if s != 0]


def chosen_channels(spec: str, count: int, fmt: LatentFormat | None, operation: str) -> list[int]:
    """The indices of the channels a choice names (with a strength above 0): at least one."""
    chosen = selected(parse_channels(spec, count, fmt, operation))
    require(chosen, "No channels chosen.", NO_CHANNELS_FIX)
    return chosen


def parse_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LatentLabInputError(f"The {what} is not a number.", "Write a number such as 0.5.") from None
    require(math.isfinite(value), f"The {what} is not finite.")
    return value


@functools.lru_cache(maxsize=256)
def _channel_strengths(text: str, count: int, names: tuple, default_strength: float) -> tuple:
    if text == "all":
        return (default_strength,) * count
    require(text != "", "No channels chosen.", NO_CHANNELS_FIX)
    strengths = [0.0] * count
    for part in text.split(","):
        item, _, amount = part.strip().partition(":")
        shown = excerpt(part)
        value = parse_number(amount, f"channel strength '{shown}'") if amount else default_strength
        check_strength(value, f"channel strength of '{shown}'")
        for index in _channel_indices(item.strip(), count, names):
            strengths[index] = value
    return tuple(strengths)


def _channel_indices(item: str, count: int, names: tuple) -> list[int]:
    lowered = [n.lower() for n in names]
    if item in lowered:
        return [lowered.index(item)]
    generic = re.fullmatch(r"c?(\d{1,6})", item)
    if generic:
        index = int(generic.group(1))
        _check_index(index, count, names)
        return [index]
    span = re.fullmatch(r"c?(\d{1,6})\s*-\s*c?(\d{1,6})", item)
    if span:
        first, last = int(span.group(1)), int(span.group(2))
        require(first <= last, f"Channel range '{item}' runs backwards.", f"Write it as '{last}-{first}'.")
        _check_index(last, count, names)
        return list(range(first, last + 1))
    raise LatentLabInputError(f"Unknown channel '{excerpt(item)}'.", _channel_help(count, names))


def _check_index(index: int, count: int, names: tuple) -> None:
    require(0 <= index < count, f"Channel {index} does not exist in a {count}-channel latent.",
            _channel_help(count, names))


def _channel_help(count: int, names: tuple) -> str:
    named = [n for n in names if n != f"c{names.index(n)}"]
    return (f"Use indices 0..{count - 1}" + (f" or names {', '.join(named)}" if named else "")
            + ", 'all' or 'auto'.")
