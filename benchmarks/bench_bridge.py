"""Benchmark: the three bridge methods against the VAE round trip, time and peak memory per image.

Run with ComfyUI's Python (the round trip uses a random-weight SD VAE built from ComfyUI's own classes):

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python benchmarks/bench_bridge.py --sizes 512 1024

Every (size, method) runs in its own subprocess, warmed up once at 64 px.
Peak memory: of the first full-size call, above the level just before it. CPU: resident memory sampled every 0.2 ms,
with glibc giving every buffer over 64 KiB its own mapping so freed memory leaves (peaks under about 0.1 MiB or
1 ms read "< 0.1 MiB"). CUDA: max_memory_allocated.
Timing: median of --repeats runs after that first call; the round trip: --roundtrip-repeats runs, the first being the
measured call (it takes minutes at 1024 px on a small CPU). On a CPU shared with other jobs, torch's threads contend
and small convolutions slow down many times over: measure on a quiet machine.
Targets (issue 4): affine and approximate at least 100x faster than the round trip, conv at least 10x.
Weights are random: this measures speed and memory, not quality.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from common import PeakMemory, load_pack  # noqa: E402  (benchmarks/ is the script's folder)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
from random_models import vae_state_dict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("vae_roundtrip", "affine", "conv", "approximate")
TARGETS = {"affine": 100, "approximate": 100, "conv": 10}




def import_comfy(comfy_path: str, device: str):
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = device == "cpu"
    import comfy.model_management  # noqa: F401  (device set-up happens at import)
    import comfy.sd
    return comfy


def random_sd_vae(seed: int):
    """comfy.sd.VAE with SD1.x/SDXL architecture (they share it) and random weights, as the integration tests build."""
    import comfy.sd
    return comfy.sd.VAE(sd=vae_state_dict(seed))


def mmap_threshold(size: int) -> None:
    """glibc: allocations above `size` get their own mapping (returned to the OS when freed). No-op elsewhere."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def worker(args) -> dict:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    import_comfy(args.comfyui_path, args.device)
    load_pack()
    from latent_lab.adapters import bridge_vae
    from latent_lab.core import bridge as bridges
    from latent_lab.core.formats import SD15, SDXL
    generator = torch.Generator().manual_seed(0)
    cells = args.size // 8
    latent = SD15.to_raw(torch.randn(1, 4, cells, cells, generator=generator))
    device = torch.device(args.device)
    if args.method == "vae_roundtrip":
        source, target = random_sd_vae(1), random_sd_vae(2)
        run = lambda z=latent: bridge_vae.roundtrip(z, source, target, tile_size=args.tile_size, overlap=64)
        repeats, warm_up = args.roundtrip_repeats, False
    elif args.method == "approximate":
        run = lambda z=latent: bridges.approximate(z.to(device), SD15, SDXL).cpu()
        repeats, warm_up = args.repeats, True
    else:
        pairs = [(torch.randn(4, 4, 32, 32, generator=generator), torch.randn(4, 4, 32, 32, generator=generator))]
        bridge = bridges.fit_affine(pairs)
        if args.method == "conv":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                conv = bridges.ConvBridge(4, 4, args.conv_width, args.conv_blocks)
            conv.affine.load_state_dict(bridge.state_dict())
            bridge = conv
        bridge.eval()
        run = lambda z=latent: bridges.apply(bridge, z, device)
        repeats, warm_up = args.repeats, True
    with torch.inference_mode():  # as ComfyUI runs nodes
        times = []
        mmap_threshold(64 * 1024)  # big buffers come from and go back to the OS, so resident memory tracks them
        run(latent[:, :, :8, :8])  # one-time set-up (libraries, model management) on a 64 px latent
        with PeakMemory(args.device) as memory:
            start = time.perf_counter()
            out = run()
            first = time.perf_counter() - start
        mmap_threshold(32 * 2**20)  # then as glibc settles after a warm-up
        if not warm_up:
            times.append(first)
        for _ in range(repeats - len(times)):
            start = time.perf_counter()
            out = run()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    assert out.shape == latent.shape and bool(torch.isfinite(out).all())
    extra = {}
    if args.method == "conv":
        extra["parameters"] = bridges.parameter_count(bridge)
    return {"method": args.method, "size": args.size, "seconds": statistics.median(times), "runs": repeats,
            "peak_bytes": memory.peak, **extra}


def machine(args) -> dict:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = os.environ.get("COMFYUI_COMMIT", "")
    try:
        commit = subprocess.run(["git", "-C", args.comfyui_path, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    try:
        with open(os.path.join(args.comfyui_path, "comfyui_version.py")) as handle:
            version = next(line.split("=")[1].strip().strip('"') for line in handle if "__version__" in line)
        commit = f"{version} {commit}".strip()
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": args.device, "python": platform.python_version(), "comfyui": commit or "unknown"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="image sides in pixels")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the fast methods")
    parser.add_argument("--roundtrip-repeats", type=int, default=1, help="timed runs of the VAE round trip")
    parser.add_argument("--tile-size", type=int, default=0, help="round-trip tile size in px (0: never tile)")
    parser.add_argument("--conv-width", type=int, default=64)
    parser.add_argument("--conv-blocks", type=int, default=6)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--comfyui-path", default=os.environ.get("COMFYUI_PATH"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.comfyui_path:
        parser.error("set COMFYUI_PATH or --comfyui-path to a ComfyUI checkout")
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    results = []
    for size in args.sizes:
        for method in args.methods:
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--method", method, "--size", str(size),
                       "--repeats", str(args.repeats), "--roundtrip-repeats", str(args.roundtrip_repeats),
                       "--tile-size", str(args.tile_size), "--conv-width", str(args.conv_width),
                       "--conv-blocks", str(args.conv_blocks), "--device", args.device, "--threads", str(args.threads),
                       "--comfyui-path", args.comfyui_path]
            done = subprocess.run(command, capture_output=True, text=True, cwd=args.comfyui_path)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{method} at {size}px failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            results.append(json.loads(lines[-1][len("RESULT "):]))
            print(f"  {method} {size}px: {results[-1]['seconds']:.4f} s", file=sys.stderr)
    info = machine(args)
    print(report(results, info, args))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "results": results}, handle, indent=2)


def report(results: list, info: dict, args) -> str:
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads), "
             f"device {info['device']}, Python {info['python']}, ComfyUI {info['comfyui']}.",
             f"Round trip: random-weight SD VAE (ComfyUI classes), decode + encode, tile size {args.tile_size or 'off'}; "
             f"conv bridge {args.conv_width}x{args.conv_blocks}. One image per call.", "",
             "| size | method | time per image | peak memory | speed-up vs round trip | target | met |",
             "|---|---|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in results}):
        rows = [r for r in results if r["size"] == size]
        reference = next((r["seconds"] for r in rows if r["method"] == "vae_roundtrip"), None)
        for r in rows:
            speedup = reference / r["seconds"] if reference and r["method"] != "vae_roundtrip" else None
            target = TARGETS.get(r["method"])
            lines.append(f"| {size}² | {r['method']} | {_duration(r['seconds'])} | {_memory(r['peak_bytes'])} | "
                         f"{f'{speedup:,.0f}x' if speedup else '—'} | {f'≥{target}x' if target else '—'} | "
                         f"{('yes' if speedup >= target else 'NO') if speedup and target else '—'} |")
    return "\n".join(lines)


def _memory(size: int) -> str:
    return "< 0.1 MiB" if size < 0.1 * 2**20 else f"{size / 2**20:,.1f} MiB"


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.2f} ms"


if __name__ == "__main__":
    main()
