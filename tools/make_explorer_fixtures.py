"""Write the Latent Explorer's shared fixtures: small .latent files and what the Python core shows for them.

    python3 tools/make_explorer_fixtures.py

tests/fixtures/explorer/ gets one .latent per synthetic latent and cases.json: for each case the settings
(the Explorer's own settings object), and the expected preview and channel-map bytes (base64, RGB, latent
size), map bounds, histograms and mean color, computed by running the correction nodes the Explorer exports
(tests/explorer_reference.py). The JS tests (tests/js/explorer_core.test.mjs) and the browser tests compare
against these to 1/255; tests/test_explorer_data.py checks they still match the Python core.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _pack import ROOT, load_pack  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
OUT = os.path.join(ROOT, "tests", "fixtures", "explorer")

LATENTS = {
    # name: (shape, format, seed, file options)
    "sdxl_24x32": ((1, 4, 24, 32), "sdxl", 1, {}),
    "sd15_batch2_f16": ((2, 4, 16, 20), "sd15", 2, {"dtype": "float16"}),
    "sd15_legacy": ((1, 4, 12, 16), "sd15", 3, {"legacy": True}),
    "flux_16x16": ((1, 16, 16, 16), "flux", 4, {}),
    "sd3_bf16": ((1, 16, 8, 12), "sd3", 5, {"dtype": "bfloat16"}),
}


def cases(ref) -> list:
    sdxl = ref.default_settings("sdxl", 4)
    sd15 = ref.default_settings("sd15", 4)
    flux = ref.default_settings("flux", 16)
    sd3 = ref.default_settings("sd3", 16)
    return [
        ("sdxl_plain", "sdxl_24x32", sdxl),
        ("sdxl_blog_all_ops", "sdxl_24x32", ref.with_changes(
            sdxl, factors="blog", center={"enabled": True, "channelStrength": 0.8, "globalStrength": 0.8},
            clamp={"enabled": True}, maximize={"enabled": True}, balance={"enabled": True})),
        ("sdxl_partial_strengths", "sdxl_24x32", ref.with_changes(
            sdxl, mapScale="per_channel", center={"enabled": True, "channels": [1, 2], "channelStrength": 0.5, "globalStrength": 0},
            clamp={"enabled": True, "threshold": 2.5, "boundary": 3.0, "mode": "channel", "strength": 0.6},
            balance={"enabled": True, "target": "#a08060", "channels": [0, 1, 2, 3], "strength": 0.7})),
        ("sd15_item1_ops", "sd15_batch2_f16", ref.with_changes(
            sd15, item=1, clamp={"enabled": True, "threshold": 3.0, "boundary": 3.5},
            maximize={"enabled": True, "boundary": 3.0, "strength": 0.5}, balance={"enabled": True})),
        ("sd15_legacy_center", "sd15_legacy", ref.with_changes(sd15, center={"enabled": True})),
        ("flux_all_channels", "flux_16x16", ref.with_changes(
            flux, center={"enabled": True, "globalStrength": 0.5}, maximize={"enabled": True, "channels": [0, 3, 5]},
            balance={"enabled": True})),
        ("sd3_balance_two_channels", "sd3_bf16", ref.with_changes(
            sd3, mapScale="per_channel", balance={"enabled": True, "channels": [2, 10], "target": "#808080"})),
    ]


def main() -> None:
    load_pack()
    import torch
    import explorer_reference as ref
    os.makedirs(OUT, exist_ok=True)
    samples = {}
    for name, (shape, fmt, seed, options) in LATENTS.items():
        raw = ref.synthetic_latent(shape, fmt, seed)
        data = ref.latent_bytes(raw, legacy=options.get("legacy", False),
                                dtype=getattr(torch, options.get("dtype", "float32")))
        with open(os.path.join(OUT, f"{name}.latent"), "wb") as handle:
            handle.write(data)
        samples[name] = ref.read_latent(data)
    manifest = []
    for case, latent, settings in cases(ref):
        result = ref.expected(samples[latent], settings)
        shape = list(samples[latent].shape)
        manifest.append({
            "name": case, "latent": f"{latent}.latent", "shape": shape, "settings": settings,
            "nodes": [[key, values] for key, values in ref.node_chain(settings, shape[1])],
            "expected": {
                "preview": ref.b64(result["preview"]), "maps": [ref.b64(m) for m in result["maps"]],
                "bounds": result["bounds"], "histogram": result["histogram"], "mean_color": result["mean_color"],
            },
        })
    with open(os.path.join(OUT, "cases.json"), "w") as handle:
        json.dump({"generated_by": "tools/make_explorer_fixtures.py", "cases": manifest}, handle, indent=1)
        handle.write("\n")
    print(f"wrote {len(LATENTS)} latents and {len(manifest)} cases to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
