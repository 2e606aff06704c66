"""Write the format tables from what the pack supports: the built-in formats into README.md, and (with ComfyUI
importable) the ComfyUI format classes the pack reads into docs/see.md, each between its markers.

    python3 tools/make_format_table.py                                              # README's built-in table
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python tools/make_format_table.py  # and docs/see.md's class table

tests/test_formats.py checks the README table is current; tests/integration/test_formats_integration.py checks
the class table against the ComfyUI under test.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pack import ROOT, load_pack  # noqa: E402

README = os.path.join(ROOT, "README.md")
SEE_DOC = os.path.join(ROOT, "docs", "see.md")
BUILTIN_MARKERS = ("<!-- format table: tools/make_format_table.py -->", "<!-- end of format table -->")
COMFY_MARKERS = ("<!-- ComfyUI format classes: tools/make_format_table.py -->", "<!-- end of ComfyUI format classes -->")
FACTOR_NAMES = {"comfyui": "ComfyUI's", "blog": "the blog post's (`blog`, more contrast)"}


def _number(value) -> str:
    return f"{value:.6g}"


def _names(fmt) -> str:
    generic = tuple(f"c{i}" for i in range(fmt.channels))
    if fmt.channel_names == generic:
        return f"c0–c{fmt.channels - 1}"
    return ", ".join(fmt.channel_names) + " (the blog post's reading)"


def builtin_table() -> str:
    from latent_lab.core.formats import FORMATS
    rows = ["| format | channels | scale | shift | built-in RGB factors | channel names |", "|---|---|---|---|---|---|"]
    for key, fmt in FORMATS.items():
        label = f"`{key}`" + (f" ({fmt.label})" if fmt.label.lower() != key else "")
        factors = ", and ".join(FACTOR_NAMES.get(name, f"`{name}`") for name in fmt.factor_sets)
        rows.append(f"| {label} | {fmt.channels} | {_number(fmt.scale)} | {_number(fmt.shift)} | {factors} | "
                    f"{_names(fmt)} |")
    return "\n".join(rows)


def _units(fmt) -> str:
    if fmt.uniform:
        return f"scale {_number(fmt.scale)}, shift {_number(fmt.shift)}"
    return "per channel (mean and std)"


def comfy_table(formats: dict) -> str:
    rows = ["| ComfyUI class | channels | latent | units (raw → scaled) | RGB factor rows | same as |",
            "|---|---|---|---|---|---|"]
    for name, fmt in sorted(formats.items()):
        factors = fmt.factor_set()
        kind = "video [B,C,T,H,W]" if fmt.dimensions == 3 else "image [B,C,H,W]"
        rows_text = str(len(factors.weights))
        if factors.unshuffle is not None:
            rows_text += f" (channels spread over {factors.unshuffle[0]}×{factors.unshuffle[1]} sub-pixels)"
        same = f"`{fmt.key}`" if fmt.key != name else ""
        rows.append(f"| `{name}` | {fmt.channels} | {kind} | {_units(fmt)} | {rows_text} | {same} |")
    return "\n".join(rows)


def replaced(text: str, markers: tuple, table: str) -> str:
    start, end = markers
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def _rewrite(path: str, markers: tuple, table: str) -> None:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(replaced(text, markers, table))
    print(f"wrote {os.path.relpath(path, ROOT)}")


def main() -> None:
    load_pack()
    _rewrite(README, BUILTIN_MARKERS, builtin_table())
    if os.environ.get("COMFYUI_PATH"):
        sys.path.insert(0, os.environ["COMFYUI_PATH"])
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        from latent_lab.adapters.comfy_formats import comfy_formats
        _rewrite(SEE_DOC, COMFY_MARKERS, comfy_table(comfy_formats()))


if __name__ == "__main__":
    main()
