"""Latent RGB Preview speed: against a bare torch reference, and against a VAE decode.

    python3 benchmarks/bench_preview.py                       # preview vs bare reference
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_preview.py --vae   # + random SD VAE decode
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

from common import load_pack, machine, timed


def bare_reference(scaled, weight, bias):
    rgb = F.linear(scaled.movedim(1, -1), weight, bias).movedim(-1, 1)
    return F.interpolate(rgb, scale_factor=8, mode="nearest")


def vae_decode_seconds(latent) -> float:
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.sd
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
    from random_models import vae_state_dict
    vae = comfy.sd.VAE(sd=vae_state_dict(seed=1))
    return timed(lambda: vae.decode(latent), repeats=2, warmup=1)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vae", action="store_true", help="also time a random-weight SD VAE decode (needs COMFYUI_PATH)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    load_pack()
    from latent_lab.core import preview
    from latent_lab.core.formats import SDXL

    latent = torch.randn(4, 4, 128, 128) * 8
    affine = SDXL.rgb_affine()
    factors = SDXL.factor_set()
    weight, bias = torch.tensor(factors.weights).T.contiguous(), torch.tensor(factors.bias)
    scaled = SDXL.to_scaled(latent)
    ours, _ = timed(lambda: preview.preview_images(latent, affine, 8), args.repeats)
    reference, _ = timed(lambda: bare_reference(scaled, weight, bias), args.repeats)
    print(f"Machine: {machine()}\n")
    print("| what | shape | median time | ratio |")
    print("|---|---|---|---|")
    print(f"| bare torch reference (F.linear + nearest x8) | [4,4,128,128] | {reference * 1e3:.1f} ms | 1.00 |")
    print(f"| Latent RGB Preview core (x8 nearest, IMAGE out) | [4,4,128,128] | {ours * 1e3:.1f} ms | {ours / reference:.2f} |")
    if args.vae:
        small = torch.randn(1, 4, 64, 64)
        decode = vae_decode_seconds(small)
        one, _ = timed(lambda: preview.preview_images(small, affine, 8), args.repeats)
        print(f"| ComfyUI VAE decode (random-weight SD VAE, CPU) | [1,4,64,64] | {decode:.2f} s | 1.00 |")
        print(f"| Latent RGB Preview core (x8) | [1,4,64,64] | {one * 1e3:.2f} ms | 1/{decode / one:,.0f} |")


if __name__ == "__main__":
    main()
