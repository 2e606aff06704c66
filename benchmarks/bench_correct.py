"""Correction costs: the LATENT nodes on a [4,4,128,128] latent, and the sampling patch against a UNet step.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_correct.py              # LATENT nodes, patch
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_correct.py --sampling   # + a UNet step
    python3 benchmarks/bench_correct.py     # without ComfyUI: node calls then also pay for a failed import each

Targets:
- A LATENT correction at [4,4,128,128] takes at most 1 ms on the CPU: the whole node call (input checks, format
  lookup, the operation and the check of its result), on a raw SDXL-like latent (scaled std 1, a few outliers).
- The sampling patch costs at most 0.1 % of a UNet step. The patch call is timed alone, without ComfyUI, on an x0
  of --size px (blog preset, and all four operations at every step as the worst case); with --sampling, a step of
  a small random-weight SD1.5-type UNet built with ComfyUI's classes (Euler, CFG 5, --unet-channels base channels,
  through comfy.sample.sample) gives the step to compare with. A small UNet is a short step, so the share it gives
  is an upper bound for real models. Weights are random: this measures speed, not quality.
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
LATENT_TARGET_MS = 1.0
PATCH_TARGET_SHARE = 0.001


def realistic_raw(shape, fmt, seed=0):
    """Scaled values ~N(0, 1) with a sprinkle of +-6 outliers, as raw LATENT values of the format."""
    generator = torch.Generator().manual_seed(seed)
    scaled = torch.randn(shape, generator=generator)
    outliers = torch.rand(shape, generator=generator) < 0.002
    scaled = torch.where(outliers, 6 * torch.sign(scaled), scaled)
    return fmt.to_raw(scaled)


def warm_allocator():
    """Free one large buffer first, as a ComfyUI process constantly does: glibc then keeps freed latent-sized
    buffers for reuse instead of handing them back to the system and faulting fresh pages in on every call (on
    this machine's VM that alone costs several milliseconds per call)."""
    big = torch.ones(4 * 1024 * 1024)  # 16 MiB
    del big


def bench_latent_ops(repeats: int, shape: tuple):
    from latent_lab.core import correct_ops as ops
    from latent_lab.core.formats import SDXL
    from latent_lab.nodes import correct as nodes

    raw = realistic_raw(shape, SDXL)
    latent = {"samples": raw}
    units = {"scale": SDXL.scale, "shift": SDXL.shift}
    affine = SDXL.rgb_affine()
    cases = [
        ("center (all channels, global)", lambda: ops.center(raw, [1.0] * 4, 1.0, SDXL.shift),
         lambda: nodes.LatentCenter().center(latent, "sdxl", "auto", 1.0, 1.0)),
        ("soft clamp, pixel (blog)", lambda: ops.soft_clamp(raw, 3.5, 4.0, "pixel", **units),
         lambda: nodes.LatentSoftClamp().clamp(latent, "sdxl", 3.5, 4.0, "pixel", 1.0)),
        ("soft clamp, channel", lambda: ops.soft_clamp(raw, 3.5, 4.0, "channel", **units),
         lambda: nodes.LatentSoftClamp().clamp(latent, "sdxl", 3.5, 4.0, "channel", 1.0)),
        ("maximize (channels 0-2)", lambda: ops.maximize(raw, 4.0, [0, 1, 2], **units),
         lambda: nodes.LatentMaximize().maximize(latent, "sdxl", "auto", 4.0, 1.0)),
        ("color balance (neutral)", lambda: ops.color_balance(raw, affine, None, [0, 1, 2]),
         lambda: nodes.LatentColorBalance().balance(latent, "sdxl", "comfyui", "neutral", "auto", 1.0)),
    ]
    calls = {"clone": lambda: raw.clone()}
    for name, core, node in cases:
        calls[name], calls[name + " node"] = core, node
    rounds = repeats * 20  # sub-millisecond calls on a shared machine: many samples
    times = interleaved(calls, rounds)
    print(f"\n## LATENT corrections on {list(shape)} (target: node call at most {LATENT_TARGET_MS:g} ms)\n")
    print(f"Medians of {rounds} rounds; a round times one call of every case in turn, each after three untimed "
          f"calls of it. Wall time; and the CPU time of this process, the call's own time with --threads 1 "
          f"whatever else waits for the cores. "
          f"One clone of the latent, for scale: {times['clone'][0] * 1e3:.3f} ms wall, "
          f"{times['clone'][1] * 1e3:.3f} ms CPU.\n")
    print("| operation | core op | node call | node call, CPU | node within 1 ms |")
    print("|---|---|---|---|---|")
    for name, _, _ in cases:
        (core_wall, _), (node_wall, node_cpu) = times[name], times[name + " node"]
        print(f"| {name} | {core_wall * 1e3:.3f} ms | {node_wall * 1e3:.3f} ms | {node_cpu * 1e3:.3f} ms | "
              f"{'yes' if node_wall * 1e3 <= LATENT_TARGET_MS else 'no'} |")


def interleaved(calls: dict, rounds: int, warmup: int = 3) -> dict:
    """{case: (median wall seconds, median CPU seconds of this process)} per call, timed in rounds over all cases,
    so that drifting load on a shared machine, and what one case leaves in the caches and the allocator, reach
    every case alike. With one torch thread the CPU time is the call's own time, whatever else waits for the
    cores; the wall time also holds the time the call spent waiting for one."""
    samples = {name: ([], []) for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(warmup):
                call()
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            samples[name][1].append(time.process_time() - cpu)
            samples[name][0].append(time.perf_counter() - wall)
    return {name: (statistics.median(walls), statistics.median(cpus)) for name, (walls, cpus) in samples.items()}


def patch_args(x0, sigmas, index):
    sigma = sigmas[index].expand(x0.shape[0])
    return {"denoised": x0, "cond_denoised": x0, "uncond_denoised": x0, "cond_scale": 5.0, "sigma": sigma,
            "input": x0, "model": None, "model_options": {"transformer_options": {"sample_sigmas": sigmas}},
            "cond": None, "uncond": None}


def schedules_to_time(fmt):
    from latent_lab.core import correct_schedule as schedules
    return {"blog preset": schedules.compile_schedule(schedules.blog_schedule(), fmt),
            "all four operations every step": schedules.compile_schedule(schedules.parse_schedule(WORST_CASE), fmt)}


def bench_patch_call(repeats: int, size: int, steps: int, device: str) -> dict:
    """Mean seconds per model call of the patch, per schedule, over a run of `steps` steps."""
    from latent_lab.adapters.correction_patch import CorrectionPatch
    from latent_lab.core.formats import SDXL

    x0 = (realistic_raw((1, 4, size // 8, size // 8), SDXL, seed=1) * SDXL.scale).to(device)
    sigmas = torch.cat([torch.linspace(14.6, 0.03, steps), torch.zeros(1)]).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    per_call = {}
    for name, steps_compiled in schedules_to_time(SDXL).items():
        patch = CorrectionPatch(steps_compiled)

        def run_all():
            for index in range(steps):
                patch(patch_args(x0, sigmas, index))
            sync()
        per_call[name] = timed(run_all, repeats, 1)[0] / steps
    print(f"\n## The patch call alone, x0 [1,4,{size // 8},{size // 8}] ({size}² px) on {device}, {steps} steps\n")
    print("| schedule | mean per model call |")
    print("|---|---|")
    for name, seconds in per_call.items():
        print(f"| {name} | {seconds * 1e3:.3f} ms |")
    return per_call


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


def use_comfyui(device: str) -> bool:
    """Make ComfyUI importable when COMFYUI_PATH is set. The nodes then find its modules as in a running server;
    without it each node call also pays for a failed import of comfy.latent_formats."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        return False
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = device == "cpu"
    return True


def bench_unet_step(repeats: int, size: int, steps: int, channels: int) -> float:
    """Median seconds per step of unpatched Euler sampling with CFG (one model call per step)."""
    import comfy.sample

    model, params = small_unet(channels)
    generator = torch.Generator().manual_seed(2)
    cond = [[torch.randn(1, 77, 768, generator=generator), {}]]
    uncond = [[torch.randn(1, 77, 768, generator=generator), {}]]
    noise = torch.randn(1, 4, size // 8, size // 8, generator=generator)

    def sample():
        comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", cond, uncond, torch.zeros_like(noise),
                            disable_pbar=True, seed=3)
    per_step = timed(sample, repeats, 1)[0] / steps
    print(f"\n## A UNet step at {size}² px: small SD1.5-type UNet ({params / 1e6:.1f}M parameters, {channels} base "
          f"channels), Euler, CFG 5, {steps} steps, median of {repeats}: {per_step * 1e3:.1f} ms per step")
    return per_step


def print_shares(per_call: dict, per_step: float):
    print(f"\n## The patch's share of a UNet step (target: at most {PATCH_TARGET_SHARE * 100:g} %)\n")
    print("| schedule | patch per call | share of a step | within target |")
    print("|---|---|---|---|")
    for name, seconds in per_call.items():
        share = seconds / per_step
        print(f"| {name} | {seconds * 1e3:.3f} ms | {share * 100:.4f} % | "
              f"{'yes' if share <= PATCH_TARGET_SHARE else 'no'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shape", type=int, nargs=4, default=[4, 4, 128, 128], help="LATENT shape for the node timings")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels for the patch and the UNet step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="device for the patch call and the UNet step")
    parser.add_argument("--sampling", action="store_true", help="time a UNet step (needs COMFYUI_PATH)")
    parser.add_argument("--sampling-repeats", type=int, default=3)
    parser.add_argument("--unet-channels", type=int, default=64, help="base channels of the small UNet (SD1.5: 320)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with_comfyui = use_comfyui(args.device)
    load_pack()
    warm_allocator()
    print(f"# Latent Lab correction benchmark\n\nMachine: {machine()}; ComfyUI importable: "
          f"{'yes' if with_comfyui else 'no'}")
    bench_latent_ops(args.repeats, tuple(args.shape))
    per_call = bench_patch_call(args.repeats, args.size, args.steps, args.device)
    if args.sampling and not with_comfyui:
        print("\n(UNet step skipped: set COMFYUI_PATH and run with ComfyUI's Python)")
    elif args.sampling:
        print_shares(per_call, bench_unet_step(args.sampling_repeats, args.size, args.steps, args.unet_channels))


if __name__ == "__main__":
    main()
