"""Write web/latent_lab_data.json: what the Latent Explorer shares with the Python core.

Formats and their RGB factors, the correction defaults, the channel-map colormap, the size cap, and the widget
specs of the correction nodes the Explorer exports. tests/test_explorer_data.py checks the committed file is
what this script writes now, so a change in Python shows up as a failing test until this is re-run:

    python3 tools/make_web_data.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pack import ROOT, load_pack  # noqa: E402

OUT = os.path.join(ROOT, "web", "latent_lab_data.json")
EXPORTED_NODES = ("LatentLabCenter", "LatentLabSoftClamp", "LatentLabMaximize", "LatentLabColorBalance",
                  "LatentLabRGBPreview")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def node_spec(key: str, cls) -> dict:
    inputs, widgets = [], []
    declared = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            options = spec[1] if len(spec) > 1 else {}
            if isinstance(spec[0], (list, tuple)):
                widgets.append({"name": name, "type": "COMBO", "options": list(spec[0]),
                                "default": options.get("default", spec[0][0] if spec[0] else None)})
            elif spec[0] in WIDGET_TYPES:
                widgets.append({"name": name, "type": spec[0],
                                **{k: options[k] for k in ("default", "min", "max", "step") if k in options}})
            else:
                inputs.append({"name": name, "type": spec[0], "optional": section == "optional"})
    return {"inputs": inputs, "widgets": widgets,
            "outputs": [{"name": n, "type": t} for n, t in zip(cls.RETURN_NAMES, cls.RETURN_TYPES)]}


def web_data() -> dict:
    # Fitted factor files would make the combo lists machine-specific: list none while reading the specs.
    saved = os.environ.pop("LATENT_LAB_MODELS_DIR", None)
    try:
        return _web_data()
    finally:
        if saved is not None:
            os.environ["LATENT_LAB_MODELS_DIR"] = saved


def _web_data() -> dict:
    load_pack()
    from latent_lab.core import correct_ops, formats, latent_files, render
    from latent_lab.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    fmts = {}
    for key, fmt in formats.FORMATS.items():
        fmts[key] = {
            "label": fmt.label, "channels": fmt.channels, "scale": fmt.scale, "shift": fmt.shift,
            "channel_names": list(fmt.channel_names),
            "factor_sets": {name: {"weights": [list(r) for r in fs.weights], "bias": list(fs.bias), "source": fs.source}
                            for name, fs in fmt.factor_sets.items()},
        }
    nodes = {key: {"display_name": NODE_DISPLAY_NAME_MAPPINGS[key], **node_spec(key, NODE_CLASS_MAPPINGS[key])}
             for key in EXPORTED_NODES if key in NODE_CLASS_MAPPINGS}
    return {
        "generated_by": "tools/make_web_data.py",
        "formats": fmts,
        "correction_defaults": correct_ops.FORMAT_DEFAULTS,
        "default_boundary": correct_ops.DEFAULT_BOUNDARY,
        "min_peak": correct_ops.MIN_PEAK,
        "rec709_luma": list(correct_ops.REC709_LUMA),
        "diverging": [list(map(float, row)) for row in render._DIVERGING],
        "max_bytes": latent_files.MAX_BYTES,
        "nodes": nodes,
    }


def text() -> str:
    return json.dumps(web_data(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    with open(OUT, "w") as handle:
        handle.write(text())
    print(f"wrote {os.path.relpath(OUT, ROOT)}")
