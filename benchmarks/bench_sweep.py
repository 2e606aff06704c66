"""Benchmark: a CFG sweep in one batched pass against the same cells as separate KSampler runs.

Run with ComfyUI's Python (a random-weight SD1.5 checkpoint is built once with ComfyUI's classes and cached,
as the integration tests do):

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_sweep.py --size 256 --steps 8 20

Modes, each (steps, mode) in its own subprocess so peak memory is its own:
  separate     one KSampler run per cell (nodes.common_ksampler, what the KSampler node calls)
  sweep        CFG Sweep Sampler, model_batch "all cells" (what the default "auto" picks on a GPU)
  sweep_exact  CFG Sweep Sampler, model_batch "per cell (exact)" (what "auto" picks on a CPU): bitwise equal
               to the separate runs
Every subprocess loads the model and warms up with one 1-step run at the benchmark size before timing.
Peak memory: above the level just before the timed run; resident memory sampled every 2 ms (CPU) or
max_memory_allocated (CUDA). Targets (issue 6): sweep at most 0.92x the separate runs' time at 8 steps on a
2-core CPU, at most 0.5x on a GPU. Weights are random: this measures speed and memory, not image quality.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from common import PeakMemory, load_pack, machine, sweep_parser  # benchmarks/ is the script's folder

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODES = ("separate", "sweep", "sweep_exact")
TARGETS = {"cpu": 0.92, "cuda": 0.5}


def checkpoint(comfy_path: str) -> str:
    """The integration tests' random-weight SD1.5 checkpoint (built once, cached)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    from random_models import cached_random_model
    return cached_random_model("sd15_checkpoint", 3, comfy_path)


def worker(args) -> dict:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, args.comfyui_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = args.device == "cpu"
    import comfy.model_management  # noqa: F401  (device set-up happens at import)
    import comfy.sd
    import comfy.utils
    import nodes
    comfy.utils.PROGRESS_BAR_ENABLED = False
    load_pack()
    from latent_lab.core.sweep_grammar import parse_values
    from latent_lab.nodes.sweep import BATCHED, EXACT, CFGSweepSampler

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(args.checkpoint, output_vae=False, output_clip=True)
    encode = nodes.CLIPTextEncode()
    positive = encode.encode(clip, "a lighthouse on a cliff at sunset, oil painting")[0]
    negative = encode.encode(clip, "blurry, low quality")[0]
    latent = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}
    cfgs = parse_values(args.cfg_values, "cfg")

    def separate(steps):
        return torch.cat([nodes.common_ksampler(model, args.seed, steps, cfg, args.sampler, args.scheduler, positive,
                                                negative, latent)[0]["samples"] for cfg in cfgs])

    def sweep(steps, exact):
        result = CFGSweepSampler().sweep(model, args.seed, steps, args.cfg_values, args.sampler, args.scheduler,
                                         positive, negative, latent, 1.0, "", 0, EXACT if exact else BATCHED, 64)
        return result["result"][0]["samples"], result["result"][1]["run"]

    with torch.inference_mode():  # as ComfyUI runs nodes
        run = {"separate": lambda steps: (separate(steps), None),
               "sweep": lambda steps: sweep(steps, False),
               "sweep_exact": lambda steps: sweep(steps, True)}[args.mode]
        run(1)  # warm-up: model load, kernels
        with PeakMemory(args.device, interval=0.002) as memory:
            start = time.perf_counter()
            samples, info = run(args.steps)
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
    return {"mode": args.mode, "steps": args.steps, "seconds": seconds, "peak": memory.peak, "cells": len(cfgs),
            "run": info, "finite": bool(torch.isfinite(samples).all())}


def run_worker(args, mode: str, steps: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--mode", mode, "--steps-one", str(steps),
               "--checkpoint", args.checkpoint, "--comfyui-path", args.comfyui_path, "--size", str(args.size),
               "--cfg-values", args.cfg_values, "--sampler", args.sampler, "--scheduler", args.scheduler,
               "--seed", str(args.seed), "--device", args.device, "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=args.comfyui_path)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} at {steps} steps failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(args, results: list) -> str:
    lines = [f"Machine: {machine()}",
             f"Model: random-weight SD1.5 UNet, {args.size}x{args.size} px ({args.size // 8}x{args.size // 8} latent), "
             f"sampler {args.sampler}, scheduler {args.scheduler}, CFG values '{args.cfg_values}', one seed, "
             f"device {args.device}",
             "",
             "| steps | mode | wall time | per cell | vs separate | peak memory | model rows evaluated |",
             "|---|---|---|---|---|---|---|"]
    for steps in args.steps:
        rows = {r["mode"]: r for r in results if r["steps"] == steps}
        base = rows.get("separate", {}).get("seconds")
        for mode in MODES:
            if mode not in rows:
                continue
            r = rows[mode]
            ratio = f"{r['seconds'] / base:.2f}x" if base else "-"
            run = r["run"]
            evaluated = f"{run['rows_evaluated']} of {run['rows_separate_runs']}" if run else "all"
            lines.append(f"| {steps} | {mode} | {r['seconds']:.1f} s | {r['seconds'] / r['cells']:.2f} s | {ratio} | "
                         f"{r['peak'] / 2 ** 20:.0f} MiB | {evaluated} |")
    target = TARGETS.get(args.device)
    if target:
        lines += ["", f"Target: sweep at most {target}x the separate runs at 8 steps ({args.device})."]
    return "\n".join(lines)


def main():
    parser = sweep_parser(__doc__, MODES, scheduler="normal")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--cfg-values", default="2-12 [6]", help="the sweep's CFG list (6 values by default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--steps-one", type=int, dest="steps_one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.comfyui_path:
        parser.error("set COMFYUI_PATH or pass --comfyui-path")
    if args.worker:
        args.steps = args.steps_one
        print(json.dumps(worker(args)))
        return
    args.checkpoint = args.checkpoint or checkpoint(args.comfyui_path)
    results = []
    for steps in args.steps:
        for mode in args.modes:
            results.append(run_worker(args, mode, steps))
            print(f"done: {mode} at {steps} steps, {results[-1]['seconds']:.1f} s", file=sys.stderr)
    print(table(args, results))


if __name__ == "__main__":
    main()
