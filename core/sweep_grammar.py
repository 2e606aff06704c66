"""Sweep value lists in the grammar A1111's X/Y/Z plot made familiar, parsed strictly.

    list   := item ("," item)*              whitespace is allowed around every token
    item   := number
            | number "-" number             a range with step 1 towards the end (or -1 going down)
            | number "-" number "[" n "]"   n evenly spaced values, both ends included (n >= 2)
            | number "-" number "(" [+|-] step ")"   start, start+step, ... up to the end
    number := digits ["." digits] | "." digits      no sign, no exponent
Seed lists take integers only, and also "+N": N seeds counting up from the base seed (the whole list).

A stepped range includes its end when the end lies on the step grid (within 1e-9 of a step), as in
"2-12 (+2)" -> 2, 4, ... 12; "2-12 (+3)" -> 2, 5, 8, 11. Values keep the order they are written in,
are rounded to 10 decimal places, and may not repeat. CFG values lie in 0..100, seeds in 0..2^64-1.

tests/vectors/sweep_grammar.json holds shared test vectors; the browser's copy of this grammar reads
the same file, so change both together.
"""
import math
import re

from .errors import LatentLabInputError

CFG_RANGE = (0.0, 100.0)
SEED_RANGE = (0, 0xFFFF_FFFF_FFFF_FFFF)
MAX_VALUES = 1024
DECIMALS = 10
ON_GRID = 1e-9

_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_ITEM = re.compile(r"\s*(?P<a>[^-\[\]()]*?)\s*(?:-\s*(?P<b>[^-\[\]()]*?)\s*"
                   r"(?:\[(?P<count>[^\]]*)\]|\((?P<step>[^)]*)\))?\s*)?")
_RELATIVE = re.compile(r"\s*\+\s*(?P<n>[^,]*?)\s*")
_STEP = re.compile(r"\s*(?P<sign>[+-]?)\s*(?P<number>[^\s]*)\s*")

KINDS = ("cfg", "seed")
AXIS_NAMES = {"cfg": "CFG", "seed": "seed"}


class SweepGrammarError(LatentLabInputError):
    """A value list that cannot be read; `kind` is a short machine-readable reason (see the test vectors)."""

    def __init__(self, kind: str, problem: str, fix: str = ""):
        self.kind = kind
        super().__init__(problem, fix)


def parse_values(text: str, kind: str = "cfg", base_seed: int = 0) -> list:
    """The values a list stands for: floats for CFG, ints for seeds. Raises SweepGrammarError."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    name = AXIS_NAMES[kind]
    if not isinstance(text, str) or not text.strip():
        raise SweepGrammarError("empty", f"The {name} list is empty.", _example(kind))
    relative = _RELATIVE.fullmatch(text)
    if relative is not None:
        values = _relative_seeds(relative.group("n"), kind, base_seed)
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


def _expand(item: str, kind: str, position: int) -> list:
    name = AXIS_NAMES[kind]
    where = f"item {position} of the {name} list"
    if kind == "seed" and item.strip().startswith("+"):
        raise SweepGrammarError("relative", f"'{item.strip()}' ({where}): '+N' must be the whole seed list.",
                                "Write '+4' alone, or list the seeds: '1, 5, 9' or '100-103'.")
    if not item.strip():
        raise SweepGrammarError("syntax", f"{where[0].upper()}{where[1:]} is empty (two commas in a row, or a comma at an end).",
                                "Remove the extra comma.")
    if item.strip().startswith("-"):
        raise SweepGrammarError("syntax", f"'{item.strip()}' ({where}) is negative.",
                                "Negative values are not allowed. " + _example(kind))
    match = _ITEM.fullmatch(item)
    if match is None:
        raise SweepGrammarError("syntax", f"Cannot read '{item.strip()}' ({where}).", _example(kind))
    a = _number(match.group("a"), kind, item, where)
    if match.group("b") is None:
        return [a]
    b = _number(match.group("b"), kind, item, where)
    if match.group("count") is not None:
        return _count_range(a, b, match.group("count"), kind, item, where)
    return _step_range(a, b, match.group("step"), kind, item, where)


def _number(text: str, kind: str, item: str, where: str):
    text = text.strip()
    if _NUMBER.fullmatch(text) is None:
        hint = "Negative values are not allowed. " if text.startswith("-") else ""
        raise SweepGrammarError("syntax", f"'{text}' in '{item.strip()}' ({where}) is not a number.",
                                hint + _example(kind))
    if kind == "seed":
        if not text.isdigit():
            raise SweepGrammarError("not_integer", f"Seed '{text}' ({where}) is not a whole number.",
                                    "Seeds are whole numbers like 42.")
        return _bounded(int(text), kind, where)
    return _bounded(round(float(text), DECIMALS), kind, where)


def _bounded(value, kind: str, where: str):
    if kind == "cfg":
        if not math.isfinite(value):
            raise SweepGrammarError("non_finite", f"A CFG value ({where}) is not finite.",
                                    "Use CFG values between 0 and 100.")
        low, high = CFG_RANGE
        if not low <= value <= high:
            raise SweepGrammarError("range", f"CFG {format_number(value)} ({where}) is outside {low:g}..{high:g}.",
                                    "Use CFG values between 0 and 100.")
    else:
        low, high = SEED_RANGE
        if not low <= value <= high:
            raise SweepGrammarError("range", f"Seed {value} ({where}) is outside 0..{high}.",
                                    "Use seeds between 0 and 18446744073709551615.")
    return value


def _count_range(a, b, count_text: str, kind: str, item: str, where: str) -> list:
    count_text = count_text.strip()
    if not count_text.isdigit() or int(count_text) < 2:
        raise SweepGrammarError("count", f"The count [{count_text}] in '{item.strip()}' ({where}) must be a whole "
                                f"number of at least 2.", "Example: '2-12 [6]' gives 6 values from 2 to 12.")
    count = int(count_text)
    _check_count(count, AXIS_NAMES[kind])
    if kind == "seed":
        if (b - a) % (count - 1):
            raise SweepGrammarError("not_integer", f"'{item.strip()}' ({where}) does not split into {count} whole "
                                    "seeds.", "Pick a count where (end - start) / (count - 1) is whole, or use a step.")
        step = (b - a) // (count - 1)
        return [a + i * step for i in range(count)]
    spacing = (b - a) / (count - 1)
    return [round(a + i * spacing, DECIMALS) for i in range(count - 1)] + [b]


def _step_range(a, b, step_text, kind: str, item: str, where: str) -> list:
    if step_text is None:
        step = 1 if b >= a else -1
    else:
        step = _step(step_text, kind, item, where)
    if a == b:
        return [a]
    if step == 0:
        raise SweepGrammarError("zero_step", f"The step in '{item.strip()}' ({where}) is zero.",
                                "Use a step like (+0.5), or a count like [5].")
    if (b - a) * step < 0:
        sign = "+" if b > a else "-"
        raise SweepGrammarError("step_direction", f"The step in '{item.strip()}' ({where}) points away from the "
                                f"range's end.", f"Going from {format_number(a)} to {format_number(b)} needs a "
                                f"step with sign {sign}, like ({sign}{format_number(abs(step))}).")
    if kind == "seed":
        count = (b - a) // step + 1
        _check_count(count, AXIS_NAMES[kind])
        return [a + i * step for i in range(count)]
    count = math.floor((b - a) / step + ON_GRID) + 1
    _check_count(count, AXIS_NAMES[kind])
    return [round(a + i * step, DECIMALS) for i in range(count)]


def _step(text: str, kind: str, item: str, where: str):
    match = _STEP.fullmatch(text)
    number = match.group("number") if match else ""
    if not number or _NUMBER.fullmatch(number) is None:
        raise SweepGrammarError("syntax", f"The step ({text.strip()}) in '{item.strip()}' ({where}) is not a number.",
                                "Write steps like (+2) or (-0.5).")
    if kind == "seed":
        if not number.isdigit():
            raise SweepGrammarError("not_integer", f"The seed step ({text.strip()}) ({where}) is not whole.",
                                    "Seed steps are whole numbers like (+10).")
        value = int(number)
    else:
        value = round(float(number), DECIMALS)
        if not math.isfinite(value):
            raise SweepGrammarError("non_finite", f"The step ({text.strip()}) ({where}) is not finite.",
                                    "Write steps like (+2) or (-0.5).")
    return -value if match.group("sign") == "-" else value


def _relative_seeds(count_text: str, kind: str, base_seed: int) -> list:
    if kind != "seed":
        raise SweepGrammarError("syntax", "'+N' is only for seed lists.", _example(kind))
    if not count_text.isdigit() or int(count_text) < 1:
        raise SweepGrammarError("count", f"'+{count_text}' needs a whole number of seeds, at least 1.",
                                "Example: '+4' is the seed and the next 3.")
    count = int(count_text)
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
    if kind == "cfg":
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
