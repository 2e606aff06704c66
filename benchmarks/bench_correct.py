"""Correction costs (issue 3): the LATENT nodes against one clone, and the sampling patch against a plain step.

    python3 benchmarks/bench_correct.py                                   # LATENT ops + the patch call alone
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_correct.py --sampling   # + real sampling

LATENT nodes: each operation on a [4,4,128,128] raw latent (scaled std 1 with a few outliers, SDXL units) as the
nodes call it, and the whole node call (input checks included), each against `samples.clone()`. Target: at most 3x.
Sampling: a small random-weight SD1.5-type UNet built with ComfyUI's classes (--unet-channels base channels) at
--size px, Euler with CFG through comfy.sample.sample, unpatched vs Latent Correction (the blog preset, and every
operation active at every step as the worst case). Target: at most 2% per step. The patch call alone is also timed
on the same x0 shape, without ComfyUI, as a tighter measure. Weights are random: this measures speed, not quality.
"""
import argparse
import os
import statistics
import sys
import time

import torch

from common import load_pack, machine, timed

WORST_CASE = """
soft_clamp    0-100% threshold=3.5 boundary=4
center        0-100% channel=0.8 global=0.8
maximize      0-100% boundary=4
color_balance 0-100% target=neutral
"""


def realistic_raw(shape, fmt, seed=0):
    """Scaled values ~N(0, 1) with a sprinkle of +-6 outliers, as raw LATENT values of the format."""
    generator = torch.Generator().manual_seed(seed)
    scaled = torch.randn(shape, generator=generator)
    outliers = torch.rand(shape, generator=generator) < 0.002
    scaled = torch.where(outliers, 6 * torch.sign(scaled), scaled)
    return fmt.to_raw(scaled)


def bench_latent_ops(repeats: int, shape: tuple):
    from latent_lab.core import correct
    from latent_lab.core.formats import SDXL
    from latent_lab.nodes import correct as nodes

    raw = realistic_raw(shape, SDXL)
    latent = {"samples": raw}
    units = {"scale": SDXL.scale, "shift": SDXL.shift}
    affine = SDXL.rgb_affine()
    cases = [
        ("center (all channels, global)", lambda: correct.center(raw, [1.0] * 4, 1.0, **units),
         lambda: nodes.LatentCenter().center(latent, "sdxl", "auto", 1.0, 1.0)),
        ("soft clamp, pixel (blog)", lambda: correct.soft_clamp(raw, 3.5, 4.0, "pixel", **units),
         lambda: nodes.LatentSoftClamp().clamp(latent, "sdxl", 3.5, 4.0, "pixel", 1.0)),
        ("soft clamp, channel", lambda: correct.soft_clamp(raw, 3.5, 4.0, "channel", **units),
         lambda: nodes.LatentSoftClamp().clamp(latent, "sdxl", 3.5, 4.0, "channel", 1.0)),
        ("maximize (channels 0-2)", lambda: correct.maximize(raw, 4.0, [0, 1, 2], **units),
         lambda: nodes.LatentMaximize().maximize(latent, "sdxl", "auto", 4.0, 1.0)),
        ("color balance (neutral)", lambda: correct.color_balance(raw, affine, None, [0, 1, 2]),
         lambda: nodes.LatentColorBalance().balance(latent, "sdxl", "comfyui", "neutral", "auto", 1.0)),
    ]
    cells, offsets = raw.reshape(shape[0], shape[1], -1), torch.randn(shape[0], shape[1], 1, 1)
    floors = {  # the fewest torch calls each kind of operation needs, with no Python between them
        "a channel sum, then an add (center, color balance)": lambda: raw + cells.sum(2)[..., None, None],
        "channel min and max, then a multiply (maximize)": lambda: (cells.amin(2), cells.amax(2), raw * offsets),
        "pixel min and max, then a clone (sparse soft clamp)": lambda: (cells.amin(1), cells.amax(1), raw.clone()),
    }
    calls = {"clone": lambda: raw.clone(), "input check": lambda: nodes.samples_of(latent), **floors}
    for name, core, node in cases:
        calls[name], calls[name + " node"] = core, node
    rounds = repeats * 20  # sub-millisecond calls on a shared machine: many samples
    times = interleaved(calls, rounds)
    clone = times["clone"]
    print(f"\n## LATENT operations on {list(shape)} (target: at most 3x one clone)\n")
    print(f"clone: {clone * 1e3:.3f} ms. Each figure is a median of {rounds} rounds; a round times one call of "
          "every case in turn, each after three untimed calls of it.\n")
    print("| operation | core op | ratio | node call | ratio | node within 3x |")
    print("|---|---|---|---|---|---|")
    for name, _, _ in cases:
        core_time, node_time = times[name], times[name + " node"]
        print(f"| {name} | {core_time * 1e3:.3f} ms | {core_time / clone:.2f}x | {node_time * 1e3:.3f} ms | "
              f"{node_time / clone:.2f}x | {'yes' if node_time <= 3 * clone else 'no'} |")
    print("\nFloors, timed in the same rounds:\n")
    print("| least work | time | ratio |")
    print("|---|---|---|")
    for name in floors:
        print(f"| {name} | {times[name] * 1e3:.3f} ms | {times[name] / clone:.2f}x |")
    check = times["input check"]
    print(f"\nInput check alone (samples_of: NaN/inf scan of the whole latent): {check * 1e3:.3f} ms = {check / clone:.2f}x clone.")


def interleaved(calls: dict, rounds: int, warmup: int = 3) -> dict:
    """Median seconds per call of each case, timed in rounds over all cases, so that drifting load on a shared
    machine, and what one case leaves in the caches and the allocator, reach every case alike."""
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(warmup):
                call()
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def patch_args(x0, sigmas, index):
    sigma = sigmas[index].expand(x0.shape[0])
    return {"denoised": x0, "cond_denoised": x0, "uncond_denoised": x0, "cond_scale": 5.0, "sigma": sigma,
            "input": x0, "model": None, "model_options": {"transformer_options": {"sample_sigmas": sigmas}},
            "cond": None, "uncond": None}


def bench_patch_call(repeats: int, size: int, steps: int):
    from latent_lab.adapters.correction_patch import CorrectionPatch
    from latent_lab.core import correct
    from latent_lab.core.formats import SDXL

    x0 = realistic_raw((1, 4, size // 8, size // 8), SDXL, seed=1) * SDXL.scale
    sigmas = torch.cat([torch.linspace(14.6, 0.03, steps), torch.zeros(1)])
    print(f"\n## The patch call alone, x0 [1,4,{size // 8},{size // 8}] ({size}² px), {steps} steps\n")
    print("| schedule | mean per model call |")
    print("|---|---|")
    for name, schedule in (("blog preset", correct.blog_schedule()), ("all four operations every step",
                                                                     correct.parse_schedule(WORST_CASE))):
        patch = CorrectionPatch(correct.compile_schedule(schedule, SDXL))

        def run_all():
            for index in range(steps):
                patch(patch_args(x0, sigmas, index))
        total = timed(run_all, repeats, 1)[0]
        print(f"| {name} | {total / steps * 1e3:.3f} ms |")


SMALL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "num_res_blocks": [1, 1, 1],
    "transformer_depth": [1, 1, 1], "channel_mult": [1, 2, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def small_unet(channels: int):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
    from random_models import small_sd15_model
    model = small_sd15_model({**SMALL_UNET, "model_channels": channels})
    return model, sum(p.numel() for p in model.model.diffusion_model.parameters())


def bench_sampling(repeats: int, size: int, steps: int, channels: int):
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        print("\n(sampling skipped: set COMFYUI_PATH and run with ComfyUI's Python)")
        return
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.sample
    from latent_lab.adapters.correction_patch import correction_model
    from latent_lab.core import correct
    from latent_lab.core.formats import SD15

    model, params = small_unet(channels)
    generator = torch.Generator().manual_seed(2)
    cond = [[torch.randn(1, 77, 768, generator=generator), {}]]
    uncond = [[torch.randn(1, 77, 768, generator=generator), {}]]
    noise = torch.randn(1, 4, size // 8, size // 8, generator=generator)
    models = {
        "unpatched": model,
        "blog preset": correction_model(model, correct.compile_schedule(correct.blog_schedule(), SD15)),
        "all four operations every step": correction_model(model, correct.compile_schedule(
            correct.parse_schedule(WORST_CASE), SD15)),
    }

    def sample(m):
        comfy.sample.sample(m, noise, steps, 5.0, "euler", "normal", cond, uncond, torch.zeros_like(noise),
                            disable_pbar=True, seed=3)

    sample(model)  # load the model
    # Rounds over the variants so drifting load on a shared machine hits them alike; each timed run follows an
    # untimed one of the same variant, so ComfyUI's switching between model clones is not counted as per-step cost.
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, m in models.items():
            sample(m)
            start = time.perf_counter()
            sample(m)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["unpatched"])
    print(f"\n## Sampling at {size}² px: small SD1.5-type UNet ({params / 1e6:.1f}M parameters, {channels} base "
          f"channels), Euler, CFG 5, {steps} steps, median of {repeats} (target: at most 2% per step)\n")
    print("| model | per step | overhead |")
    print("|---|---|---|")
    for name, samples in times.items():
        per_step = statistics.median(samples) / steps
        overhead = statistics.median(samples) / base - 1
        print(f"| {name} | {per_step * 1e3:.1f} ms | {'-' if name == 'unpatched' else f'{overhead * 100:+.2f}%'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shape", type=int, nargs=4, default=[4, 4, 128, 128], help="LATENT shape for the node timings")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels for the sampling timings")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampling", action="store_true", help="time real ComfyUI sampling (needs COMFYUI_PATH)")
    parser.add_argument("--sampling-repeats", type=int, default=5)
    parser.add_argument("--unet-channels", type=int, default=64, help="base channels of the small UNet (SD1.5: 320)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_pack()
    print(f"# Latent Lab correction benchmark\n\nMachine: {machine()}")
    bench_latent_ops(args.repeats, tuple(args.shape))
    bench_patch_call(args.repeats, args.size, args.steps)
    if args.sampling:
        bench_sampling(args.sampling_repeats, args.size, args.steps, args.unet_channels)


if __name__ == "__main__":
    main()
