"""Benchmark: a guidance sweep (6 values) in one pass against FluxGuidance(g) -> KSampler run once per value.

Run with ComfyUI's Python; the model is the integration tests' tiny random-weight Flux.1-dev-type transformer
(comfy.supported_models.Flux with a guidance embedding, tests/integration/random_dit_models.py), built in-process:

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_sweep_guidance.py --size 256 --steps 8

Modes (CFG 1, one seed, as Flux.1-dev is sampled):
  separate     one FluxGuidance + nodes.common_ksampler run per guidance value (what a hand-made loop does)
  sweep_exact  CFG Sweep Sampler with guidance_values, model_batch "per cell (exact)" (what "auto" picks on a
               CPU): every cell bitwise equal to its separate run
  sweep        the same, model_batch "all cells": one model call per step for every cell
The modes alternate over --repeats rounds after a warm-up; the table gives the median and the fastest run (on a
machine shared with other work the fastest run is the steadier figure, and the process's CPU time, with
--threads 1, the figure least disturbed by other work). Targets (issue 14): the
exact sweep at most 0.92x the separate runs on a CPU; on a GPU, at most 0.5x. Weights are random: this
measures speed, not image quality.
"""
import os
import statistics
import sys
import time

from common import load_pack, machine, sweep_parser  # benchmarks/ is the script's folder

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODES = ("separate", "sweep_exact", "sweep")
TARGETS = {"cpu": 0.92, "cuda": 0.5}


def setup(args):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, args.comfyui_path)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    import comfy.cli_args
    comfy.cli_args.args.cpu = args.device == "cpu"
    import comfy.model_management  # noqa: F401  (device set-up happens at import)
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    load_pack()
    from random_dit_models import flux_model
    return flux_model(guidance=True, seed=0)


def runners(args, model, positive, negative) -> dict:
    import torch
    import nodes
    from comfy_extras.nodes_flux import FluxGuidance
    from latent_lab.core.sweep_grammar import parse_values
    from latent_lab.nodes.sweep import BATCHED, EXACT, CFGSweepSampler
    latent = {"samples": torch.zeros(1, 16, args.size // 8, args.size // 8)}
    guidances = parse_values(args.guidance_values, "guidance")

    def separate():
        return torch.cat([nodes.common_ksampler(model, args.seed, args.steps, 1.0, args.sampler, args.scheduler,
                                                FluxGuidance.execute(positive, g).result[0], negative,
                                                latent)[0]["samples"] for g in guidances])

    def sweep(model_batch):
        out = CFGSweepSampler().sweep(model, args.seed, args.steps, "1", args.sampler, args.scheduler, positive,
                                      negative, latent, 1.0, "", 0, model_batch, 64,
                                      guidance_values=args.guidance_values)
        return out["result"][0]["samples"]

    return {"separate": separate, "sweep_exact": lambda: sweep(EXACT), "sweep": lambda: sweep(BATCHED)}


def measure(args) -> dict:
    import torch
    model, positive, negative = setup(args)
    run = runners(args, model, positive, negative)
    seconds = {mode: [] for mode in args.modes}
    cpu = {mode: [] for mode in args.modes}
    outputs = {}
    with torch.inference_mode():  # as ComfyUI runs nodes
        for mode in args.modes:
            outputs[mode] = run[mode]()  # warm-up: model load, kernels
        for _ in range(args.repeats):
            for mode in args.modes:
                start, start_cpu = time.perf_counter(), time.process_time()
                run[mode]()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                seconds[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
    diffs = {mode: float((outputs[mode] - outputs["separate"]).abs().max()) for mode in args.modes
             if "separate" in outputs}
    return {mode: (statistics.median(times), min(times), statistics.median(cpu[mode]), diffs.get(mode))
            for mode, times in seconds.items()}


def table(args, results: dict) -> str:
    lines = [f"Machine: {machine()}",
             f"Model: tiny random-weight Flux.1-dev-type transformer (ComfyUI's Flux config and model class), "
             f"{args.size}x{args.size} px ({args.size // 8}x{args.size // 8} latent, 16 channels), sampler "
             f"{args.sampler}, scheduler {args.scheduler}, {args.steps} steps, CFG 1, guidance values "
             f"'{args.guidance_values}', one seed, device {args.device}, median of {args.repeats}",
             "",
             "| mode | median wall time | vs separate | fastest run | vs separate | median CPU time | vs separate "
             "| max abs difference to separate |",
             "|---|---|---|---|---|---|---|---|"]
    base = results.get("separate", (None, None, None))[:3]

    def ratio(value, reference):
        return f"{value / reference:.2f}x" if reference else "-"
    for mode in MODES:
        if mode not in results:
            continue
        seconds, fastest, cpu, diff = results[mode]
        lines.append(f"| {mode} | {seconds:.2f} s | {ratio(seconds, base[0])} | {fastest:.2f} s | "
                     f"{ratio(fastest, base[1])} | {cpu:.2f} s | {ratio(cpu, base[2])} | "
                     f"{'-' if diff is None else f'{diff:.3g}'} |")
    target = TARGETS.get(args.device)
    if target:
        lines += ["", f"Target: sweep_exact at most {target}x the separate runs ({args.device})."]
    return "\n".join(lines)


def main():
    parser = sweep_parser(__doc__, MODES, scheduler="simple")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance-values", default="1-6 [6]", help="the sweep's guidance list (6 values)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if not args.comfyui_path:
        parser.error("set COMFYUI_PATH or pass --comfyui-path")
    print(table(args, measure(args)))


if __name__ == "__main__":
    main()
