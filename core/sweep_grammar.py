"""Sweep value lists in the grammar A1111's X/Y/Z plot made familiar, parsed strictly.

    list   := item ("," item)*              whitespace (WHITESPACE) is allowed around every token
    item   := number
            | number "-" number             a range with step 1 towards the end (or -1 going down)
            | number "-" number "[" n "]"   n evenly spaced values, both ends included (n >= 2)
            | number "-" number "(" [+|-] step ")"   start, start+step, ... up to the end
    number := digits ["." digits] | "." digits      ASCII digits, no sign, no exponent
Guidance lists (the guidance a FluxGuidance node writes) read like CFG lists, with the same 0..100 bounds.
Seed lists take integers only, and also "+N": N seeds counting up from the base seed (the whole list).

A stepped range includes its end when the end lies on the step grid (within 1e-9 of a step), as in
"2-12 (+2)" -> 2, 4, ... 12; "2-12 (+3)" -> 2, 5, 8, 11. Values keep the order they are written in,
are rounded to 10 decimal places, and may not repeat. CFG values lie in 0..100, seeds in 0..2^64-1.
A list is at most MAX_TEXT characters long.

Lists are read by one left-to-right scan per item (no backtracking regular expression): this runs in
ComfyUI's VALIDATE_INPUTS, on the server's event loop, so its time must grow with the text's length only.
Messages quote at most a short excerpt of what was typed.

tests/vectors/sweep_grammar.json holds shared test vectors; the browser's copy of this grammar reads
the same file, so change both together.
"""
import math
import re

from .errors import LatentLabInputError
from .validate import excerpt

CFG_RANGE = (0.0, 100.0)
SEED_RANGE = (0, 0xFFFF_FFFF_FFFF_FFFF)
MAX_VALUES = 1024
MAX_TEXT = 32768  # 1024 twenty-digit seeds with separators fit
DECIMALS = 10
ON_GRID = 1e-9
BEYOND = 10 ** 24  # stands for any whole number too long to be a seed, count or seed step

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_DIGITS = frozenset("0123456789")
_SPECIAL = "-[]()"
# What either Python's str.strip() or JavaScript's trim() drops, so both grammars trim alike.
WHITESPACE = ("\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")

KINDS = ("cfg", "seed", "guidance")
AXIS_NAMES = {"cfg": "CFG", "seed": "seed", "guidance": "guidance"}


class SweepGrammarError(LatentLabInputError):
    """A value list that cannot be read; `kind` is a short machine-readable reason (see the test vectors)."""

    def __init__(self, kind: str, problem: str, fix: str = ""):
        self.kind = kind
        super().__init__(problem, fix)


def parse_values(text: str, kind: str = "cfg", base_seed: int = 0) -> list:
    """The values a list stands for: floats for CFG and guidance, ints for seeds. Raises SweepGrammarError."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    name = AXIS_NAMES[kind]
    if not isinstance(text, str) or not text.strip(WHITESPACE):
        raise SweepGrammarError("empty", f"The {name} list is empty.", _example(kind))
    if len(text) > MAX_TEXT:
        raise SweepGrammarError("too_long", f"The {name} list is {len(text):,} characters long, more than "
                                f"{MAX_TEXT:,}.", "Write long runs as ranges, like '2-12 [6]' or '100-199'.")
    stripped = text.strip(WHITESPACE)
    if stripped.startswith("+") and "," not in stripped:
        values = _relative_seeds(stripped[1:].strip(WHITESPACE), kind, base_seed)
    else:
        values = []
        for position, item in enumerate(text.split(","), start=1):
            values += _expand(item, kind, position)
            _check_count(len(values), name)
    _check_unique(values, name)
    return values


def format_values(values, kind: str = "cfg") -> str:
    """Text that parses back to exactly these values; evenly spaced runs become ranges."""
    values = list(values)
    parts, start = [], 0
    while start < len(values):
        text, end = _run_at(values, start, kind)
        parts.append(text)
        start = end
    return ", ".join(parts)


def format_number(value) -> str:
    """Shortest plain decimal (no exponent) that reads back as this value."""
    return label_number(value, DECIMALS)


def label_number(value, decimals: int = 4) -> str:
    """A short number for labels: at most `decimals` places."""
    if isinstance(value, int):
        return str(value)
    text = f"{float(value):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _example(kind: str) -> str:
    if kind == "seed":
        return "Write seeds like '1, 5, 9', '100-103', or '+4' (the seed and the next 3)."
    return "Write values like '3, 5.5, 7', '2-12 [6]' (6 values) or '2-12 (+2)' (step 2)."


def _is_digits(text: str) -> bool:
    return text != "" and _DIGITS.issuperset(text)


def _whole(digits: str) -> int:
    """ASCII digits -> int; a number longer than any bound here reads as BEYOND (Python's int() refuses more
    than 4300 digits, and no seed, count or seed step needs 25)."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) < 25 else BEYOND


def _first_of(text: str, characters: str, start: int) -> int:
    found = [i for i in (text.find(c, start) for c in characters) if i >= 0]
    return min(found) if found else len(text)


def split_item(item: str):
    """(start, end, count, step) texts of one item, unstripped (None where absent), or None when its dashes
    and brackets do not fit the grammar. One scan: start runs to the first of '-[]()', which must be '-';
    end runs to the next of them, which must be '[' or '(' (or the item's end); then the bracket's inside up to
    its closing bracket, and nothing but whitespace after it."""
    dash = _first_of(item, _SPECIAL, 0)
    if dash == len(item):
        return item, None, None, None
    if item[dash] != "-":
        return None
    opener = _first_of(item, _SPECIAL, dash + 1)
    start, end = item[:dash], item[dash + 1:opener]
    if opener == len(item):
        return start, end, None, None
    closer = {"[": "]", "(": ")"}.get(item[opener])
    close = item.find(closer, opener + 1) if closer else -1
    if close < 0 or item[close + 1:].strip(WHITESPACE):
        return None
    inside = item[opener + 1:close]
    return (start, end, inside, None) if closer == "]" else (start, end, None, inside)


def _expand(item: str, kind: str, position: int) -> list:
    name = AXIS_NAMES[kind]
    where = f"item {position} of the {name} list"
    shown = excerpt(item)
    if kind == "seed" and item.strip(WHITESPACE).startswith("+"):
        raise SweepGrammarError("relative", f"'{shown}' ({where}): '+N' must be the whole seed list.",
                                "Write '+4' alone, or list the seeds: '1, 5, 9' or '100-103'.")
    if not item.strip(WHITESPACE):
        raise SweepGrammarError("syntax", f"{where[0].upper()}{where[1:]} is empty (two commas in a row, or a comma at an end).",
                                "Remove the extra comma.")
    if item.strip(WHITESPACE).startswith("-"):
        raise SweepGrammarError("syntax", f"'{shown}' ({where}) is negative.",
                                "Negative values are not allowed. " + _example(kind))
    parts = split_item(item)
    if parts is None:
        raise SweepGrammarError("syntax", f"Cannot read '{shown}' ({where}).", _example(kind))
    start, end, count, step = parts
    if end is None:
        return [_number(start, kind, "", where)]
    a = _number(start, kind, shown, where)
    b = _number(end, kind, shown, where)
    if count is not None:
        return _count_range(a, b, count, kind, shown, where)
    return _step_range(a, b, step, kind, shown, where)


def _number(text: str, kind: str, shown: str, where: str):
    text = text.strip(WHITESPACE)
    if _NUMBER.fullmatch(text) is None:
        hint = "Negative values are not allowed. " if text.startswith("-") else ""
        inside = f" in '{shown}'" if shown else ""
        raise SweepGrammarError("syntax", f"'{excerpt(text, 20)}'{inside} ({where}) is not a number.",
                                hint + _example(kind))
    if kind == "seed":
        if not _is_digits(text):
            raise SweepGrammarError("not_integer", f"Seed '{excerpt(text, 20)}' ({where}) is not a whole number.",
                                    "Seeds are whole numbers like 42.")
        return _bounded(_whole(text), kind, where, text)
    return _bounded(round(float(text), DECIMALS), kind, where, text)


def _bounded(value, kind: str, where: str, text: str = ""):
    shown = excerpt(text, 24) if text else None
    if kind != "seed":
        name = AXIS_NAMES[kind]
        if not math.isfinite(value):
            raise SweepGrammarError("non_finite", f"A {name} value ({where}) is not finite.",
                                    f"Use {name} values between 0 and 100.")
        low, high = CFG_RANGE
        if not low <= value <= high:
            raise SweepGrammarError("range", f"{name} {shown or format_number(value)} ({where}) is outside "
                                    f"{low:g}..{high:g}.", f"Use {name} values between 0 and 100.")
    else:
        low, high = SEED_RANGE
        if not low <= value <= high:
            raise SweepGrammarError("range", f"Seed {shown or value} ({where}) is outside 0..{high}.",
                                    "Use seeds between 0 and 18446744073709551615.")
    return value


def _count_range(a, b, count_text: str, kind: str, shown: str, where: str) -> list:
    count_text = count_text.strip(WHITESPACE)
    if not _is_digits(count_text) or _whole(count_text) < 2:
        raise SweepGrammarError("count", f"The count [{excerpt(count_text, 20)}] in '{shown}' ({where}) must be a "
                                f"whole number of at least 2.", "Example: '2-12 [6]' gives 6 values from 2 to 12.")
    count = _whole(count_text)
    _check_count(count, AXIS_NAMES[kind])
    if kind == "seed":
        if (b - a) % (count - 1):
            raise SweepGrammarError("not_integer", f"'{shown}' ({where}) does not split into {count} whole "
                                    "seeds.", "Pick a count where (end - start) / (count - 1) is whole, or use a step.")
        step = (b - a) // (count - 1)
        return [a + i * step for i in range(count)]
    spacing = (b - a) / (count - 1)
    return [round(a + i * spacing, DECIMALS) for i in range(count - 1)] + [b]


def _step_range(a, b, step_text, kind: str, shown: str, where: str) -> list:
    if step_text is None:
        step = 1 if b >= a else -1
    else:
        step = _step(step_text, kind, shown, where)
    if a == b:
        return [a]
    if step == 0:
        raise SweepGrammarError("zero_step", f"The step in '{shown}' ({where}) is zero.",
                                "Use a step like (+0.5), or a count like [5].")
    if (b - a) * step < 0:
        sign = "+" if b > a else "-"
        raise SweepGrammarError("step_direction", f"The step in '{shown}' ({where}) points away from the "
                                f"range's end.", f"Going from {format_number(a)} to {format_number(b)} needs a "
                                f"step with sign {sign}, like ({sign}{excerpt(format_number(abs(step)), 24)}).")
    if kind == "seed":
        count = (b - a) // step + 1
        _check_count(count, AXIS_NAMES[kind])
        return [a + i * step for i in range(count)]
    count = math.floor((b - a) / step + ON_GRID) + 1
    _check_count(count, AXIS_NAMES[kind])
    return [round(a + i * step, DECIMALS) for i in range(count)]


def split_step(text: str) -> tuple:
    """(sign, number) of a step's inside: an optional + or -, then one word."""
    text = text.strip(WHITESPACE)
    sign = text[:1] if text[:1] in ("+", "-") else ""
    return sign, text[len(sign):].strip(WHITESPACE)


def _step(text: str, kind: str, shown: str, where: str):
    sign, number = split_step(text)
    if _NUMBER.fullmatch(number) is None:
        raise SweepGrammarError("syntax", f"The step ({excerpt(text, 20)}) in '{shown}' ({where}) is not a number.",
                                "Write steps like (+2) or (-0.5).")
    if kind == "seed":
        if not _is_digits(number):
            raise SweepGrammarError("not_integer", f"The seed step ({excerpt(text, 20)}) ({where}) is not whole.",
                                    "Seed steps are whole numbers like (+10).")
        value = _whole(number)
    else:
        value = round(float(number), DECIMALS)
        if not math.isfinite(value):
            raise SweepGrammarError("non_finite", f"The step ({excerpt(text, 20)}) ({where}) is not finite.",
                                    "Write steps like (+2) or (-0.5).")
    return -value if sign == "-" else value


def _relative_seeds(count_text: str, kind: str, base_seed: int) -> list:
    if kind != "seed":
        raise SweepGrammarError("syntax", "'+N' is only for seed lists.", _example(kind))
    if not _is_digits(count_text) or _whole(count_text) < 1:
        raise SweepGrammarError("count", f"'+{excerpt(count_text, 20)}' needs a whole number of seeds, at least 1.",
                                "Example: '+4' is the seed and the next 3.")
    count = _whole(count_text)
    _check_count(count, "seed")
    _bounded(base_seed, "seed", "base seed")
    _bounded(base_seed + count - 1, "seed", f"'+{count}' list")
    return [base_seed + i for i in range(count)]


def _check_count(count: int, name: str) -> None:
    if count > MAX_VALUES:
        raise SweepGrammarError("too_many", f"The {name} list has more than {MAX_VALUES} values.",
                                "Use a larger step or a smaller count.")


def _check_unique(values: list, name: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise SweepGrammarError("duplicate", f"{name} {format_number(value)} appears twice in the list.",
                                    "Each value may appear once (ranges that share an end repeat it).")
        seen.add(value)


def _run_at(values: list, start: int, kind: str) -> tuple:
    """The longest range text starting at `start` that expands to exactly those values, or the single value."""
    if start + 2 < len(values):
        step = values[start + 1] - values[start]
        end = start + 2
        tolerance = 0 if kind == "seed" else ON_GRID * max(1.0, abs(step))
        while end < len(values) and abs((values[end] - values[end - 1]) - step) <= tolerance:
            end += 1
        for stop in range(end, start + 2, -1):
            a, b = values[start], values[stop - 1]
            for text in (_range_text(a, b, values[start + 1] - a, kind), f"{format_number(a)}-{format_number(b)} "
                         f"[{stop - start}]"):
                if text is not None and _expands_to(text, values[start:stop], kind):
                    return text, stop
    return format_number(values[start]), start + 1


def _range_text(a, b, step, kind: str):
    if step == 0:
        return None
    if kind != "seed":
        step = round(step, DECIMALS)
    if abs(step) == 1:
        return f"{format_number(a)}-{format_number(b)}"
    sign = "+" if step > 0 else "-"
    return f"{format_number(a)}-{format_number(b)} ({sign}{format_number(abs(step))})"


def _expands_to(text: str, expected: list, kind: str) -> bool:
    try:
        return _expand(text, kind, 1) == expected
    except SweepGrammarError:
        return False
