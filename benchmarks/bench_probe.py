"""Benchmark the VAE anomaly probe: decoder-equivalent passes, wall time and peak memory per mode and size,
and the map estimator against brute force.

Runs ComfyUI's own VAE class (so ComfyUI's Python environment is needed):
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_probe.py --vae VAE.safetensors
Without --vae it uses the random-weight SD VAE the integration tests cache (timings are real, the
anomaly figures mean nothing on random weights). Each measurement runs in a fresh subprocess, so peak
memory is per measurement. Prints markdown tables.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import load_pack, machine  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VAE = os.path.join(os.path.expanduser("~"), ".cache", "latent-lab-it", "random_vae_s1_v1.safetensors")




def setup_comfy(comfy_path: str, cpu: bool):
    import torch
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu or not torch.cuda.is_available()
    import comfy.model_management  # noqa: F401
    import comfy.sd
    import comfy.utils
    return comfy


def test_image(size: int):
    import torch
    generator = torch.Generator().manual_seed(size)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([0.6 * x + 0.2, 0.5 * (1 - y) + 0.1 * x, 0.3 + 0.4 * x * y])
    for _ in range(4):
        cy, cx, r = torch.rand(3, generator=generator)
        color = torch.rand(3, 1, 1, generator=generator) * 0.8 - 0.4
        image = image + color * torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.01 + 0.05 * r))
    return (image + 0.03 * torch.randn(3, size, size, generator=generator)).clamp(0, 1).movedim(0, -1)[None]


def peak_bytes(device) -> float:
    import torch
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux: KiB


def one(args) -> dict:
    """One measurement in this process: prints a JSON line."""
    import torch
    comfy = setup_comfy(args.comfyui, args.cpu)
    load_pack()
    from latent_lab.adapters.vae_probe import probe_vae
    from latent_lab.core import probe as P
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
        probed = probe_vae(vae)
        image = test_image(args.size)
        device = vae.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base_memory = peak_bytes(device)
        if args.mode == "decode":
            latent = torch.zeros(1, vae.latent_channels, args.size // 8, args.size // 8)
            probed.decode(latent)  # warm-up, float32 weights
            start = time.perf_counter()
            for _ in range(args.repeat):
                probed.decode(latent)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - start) / args.repeat
            return {"size": args.size, "mode": "decode", "seconds": seconds, "passes": 1,
                    "peak_bytes": peak_bytes(device), "base_bytes": base_memory}
        options = P.ProbeOptions(mode=args.mode, verify_decodes=args.verify_decodes, map_passes=args.map_passes,
                                 seed=args.seed)
        start = time.perf_counter()
        result = P.probe(probed, image, options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        section = result.report["influence"]
        row = {"size": args.size, "mode": args.mode, "seconds": seconds, "passes": section["decoder_equivalent_passes"],
               "peak_bytes": peak_bytes(device), "base_bytes": base_memory, "verdict": result.report["verdict"]}
        if args.save:
            torch.save({"influence": result.influence, "mean": result.mean}, args.save)
        return row


def compare(args) -> dict:
    """Map estimator vs brute force on the same latent (small sizes only: brute costs 8 decodes per cell)."""
    import torch
    from scipy.stats import spearmanr
    comfy = setup_comfy(args.comfyui, args.cpu)
    load_pack()
    from latent_lab.adapters.vae_probe import probe_vae
    from latent_lab.core import probe_far_field as FF
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
        probed = probe_vae(vae)
        pixels = test_image(args.size).movedim(-1, 1)
        mean, _ = probed.encode_moments(pixels)
        start = time.perf_counter()
        exact = FF.far_field_brute(probed.decode, mean, 3, max_batch=4)
        brute_seconds = time.perf_counter() - start
        rows = []
        for seed in range(args.seeds):
            start = time.perf_counter()
            estimate, _ = FF.far_field_map(probed.decode, mean, 3, budget=args.map_passes, seed=seed)
            rho = float(spearmanr(exact.flatten().numpy(), estimate.flatten().numpy())[0])
            ratio = (estimate / exact).flatten()
            ratio = ratio / ratio.median()
            rows.append({"seed": seed, "seconds": time.perf_counter() - start, "spearman": rho,
                         "same_top1": int(exact.argmax()) == int(estimate.argmax()),
                         "rel_error_p10": float(ratio.quantile(0.1)), "rel_error_p90": float(ratio.quantile(0.9))})
        return {"size": args.size, "brute_seconds": brute_seconds, "brute_passes": 8 * mean.shape[2] * mean.shape[3],
                "spread": float(exact.max() / exact.min()), "runs": rows}


def subprocess_json(args, extra: list) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--comfyui", args.comfyui, "--vae", args.vae,
               "--verify-decodes", str(args.verify_decodes), "--map-passes", str(args.map_passes),
               "--seeds", str(args.seeds), "--repeat", str(args.repeat)] + (["--cpu"] if args.cpu else []) + extra
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed: {' '.join(extra)}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])




def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (or COMFYUI_PATH)")
    parser.add_argument("--vae", default=DEFAULT_VAE, help="VAE .safetensors (default: the cached random SD VAE)")
    parser.add_argument("--sizes", default="256,512", help="image sizes in px (latent = size/8): 256,512 = 32x32, 64x64")
    parser.add_argument("--modes", default="verify,map", help="modes to time (verify, map, brute)")
    parser.add_argument("--verify-decodes", type=int, default=8)
    parser.add_argument("--map-passes", type=int, default=24)
    parser.add_argument("--compare-size", type=int, default=96, help="px size for map vs brute force (0: skip)")
    parser.add_argument("--seeds", type=int, default=3, help="map seeds in the comparison")
    parser.add_argument("--repeat", type=int, default=2, help="decodes timed per size for the pass time")
    parser.add_argument("--cpu", action="store_true", help="force ComfyUI's --cpu (automatic without CUDA)")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--compare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.comfyui:
        parser.error("set --comfyui or COMFYUI_PATH")
    if args.one:
        args.size, args.mode = int(args.one[0]), args.one[1]
        print(json.dumps(one(args)))
        return
    if args.compare:
        args.size = args.compare
        print(json.dumps(compare(args)))
        return

    print(f"## VAE anomaly probe benchmark\n\n{machine()}\nVAE: {os.path.basename(args.vae)}; "
          f"verify_decodes {args.verify_decodes}, map_passes {args.map_passes} (backward pass counted as "
          f"2 decoder passes)\n")
    print("| image | latent | mode | counted passes | wall s | s per decode | measured passes (wall / decode) "
          "| peak memory GiB (GPU allocated, or process RSS on CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        decode = subprocess_json(args, ["--one", str(size), "decode"])
        print(f"| {size}² | {size // 8}² | one decode | 1 | {decode['seconds']:.2f} | {decode['seconds']:.2f} | 1 "
              f"| {decode['peak_bytes'] / 2**30:.2f} |", flush=True)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            row = subprocess_json(args, ["--one", str(size), mode])
            print(f"| {size}² | {size // 8}² | {mode} | {row['passes']:g} | {row['seconds']:.1f} | "
                  f"{decode['seconds']:.2f} | {row['seconds'] / decode['seconds']:.1f} | "
                  f"{row['peak_bytes'] / 2**30:.2f} |", flush=True)
    if args.compare_size:
        result = subprocess_json(args, ["--compare", str(args.compare_size)])
        cells = args.compare_size // 8
        print(f"\n### Map estimator vs brute force ({args.compare_size}² px, {cells}x{cells} latent, radius 3)\n")
        print(f"Brute force: {result['brute_passes']} decodes, {result['brute_seconds']:.0f} s; "
              f"exact influence spread max/min {result['spread']:.2f}\n")
        print("| seed | map s | Spearman | same top-1 | estimate/exact p10 | p90 |")
        print("|---|---|---|---|---|---|")
        for run in result["runs"]:
            print(f"| {run['seed']} | {run['seconds']:.1f} | {run['spearman']:.3f} | {run['same_top1']} | "
                  f"{run['rel_error_p10']:.2f} | {run['rel_error_p90']:.2f} |")


if __name__ == "__main__":
    main()
