"""Latent RGB Preview of a video latent: a Wan 2.1 480p clip latent [1,16,21,60,104] (81 frames of 832x480),
every frame as an IMAGE, at latent size and x8, against a bare torch reference; peak memory against the output.

    python3 benchmarks/bench_video_preview.py
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_video_preview.py   # ComfyUI's Wan21 class

Without COMFYUI_PATH the format is a stand-in with Wan 2.1's shape and kind of units (16 channels, 3-D, a mean and
std per channel): the work done is the same.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

from common import PeakMemory, load_pack, machine, timed

SHAPE = (1, 16, 21, 60, 104)


def bare_reference(scaled, weight, bias, factor):
    """Factors on every frame (einsum) and a nearest upsample: [B*T, 3, H*f, W*f], no clamp, no IMAGE layout."""
    rgb = torch.einsum("bcthw,ck->btkhw", scaled, weight) + bias.view(1, 1, 3, 1, 1)
    rgb = rgb.flatten(0, 1)
    return F.interpolate(rgb, scale_factor=factor, mode="nearest") if factor > 1 else rgb


def wan_format():
    """(LatentFormat, weight [C, 3], bias [3], description)."""
    from latent_lab.core.formats import measured_format
    if os.environ.get("COMFYUI_PATH"):
        sys.path.insert(0, os.environ["COMFYUI_PATH"])
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        from latent_lab.adapters.comfy_formats import comfy_formats
        fmt = comfy_formats()["Wan21"]
        description = "ComfyUI's Wan21"
    else:
        generator = torch.Generator().manual_seed(0)
        mean, std = torch.randn(16, generator=generator), torch.rand(16, generator=generator) + 0.5
        view = (1, 16, 1, 1, 1)
        fmt = measured_format("Wan-like", 16, 3, (torch.randn(16, 3, generator=generator) * 0.1).tolist(),
                              [-0.18, -0.09, -0.34], lambda x: (x - mean.view(view).to(x)) / std.view(view).to(x),
                              lambda x: x * std.view(view).to(x) + mean.view(view).to(x))
        description = "a Wan 2.1-shaped stand-in (per-channel mean/std)"
    factors = fmt.factor_set()
    return fmt, torch.tensor(factors.weights).contiguous(), torch.tensor(factors.bias), description


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    load_pack()
    from latent_lab.core import preview

    fmt, weight, bias, description = wan_format()
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 2
    affine = fmt.rgb_affine()
    scaled = fmt.to_scaled(latent)
    print(f"Machine: {machine()}\nFormat: {description}\n")
    print("| what | size | median time | ratio | peak memory / output |")
    print("|---|---|---|---|---|")
    for factor, size in ((1, "latent"), (8, "x8")):
        reference, _ = timed(lambda: bare_reference(scaled, weight, bias, factor), args.repeats)
        ours, _ = timed(lambda: preview.preview_images(latent, affine, factor), args.repeats)
        with PeakMemory("cpu") as memory:
            images = preview.preview_images(latent, affine, factor)
        output = images.numel() * images.element_size()
        # the resident-set sampler cannot see a few MiB reused by the allocator: small outputs get no figure
        peak = f"{memory.peak / output:.2f} ({output / 2**20:.0f} MiB out)" if output >= 2**24 else \
            f"— ({output / 2**20:.1f} MiB out)"
        print(f"| bare torch reference (einsum + nearest) | {size} | {reference * 1e3:.1f} ms | 1.00 | |")
        print(f"| Latent RGB Preview core, {images.shape[0]} frames, IMAGE {list(images.shape[1:3])} | {size} | "
              f"{ours * 1e3:.1f} ms | {ours / reference:.2f} | {peak} |")
        del images


if __name__ == "__main__":
    main()
