"""Shared bits for benchmark scripts: machine description, timing, peak memory."""
import os
import platform
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _pack import load_pack as load
    return load()


def machine() -> str:
    import torch
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores; GPU: {gpu}; torch {torch.__version__} ({threads} threads), "
            f"Python {platform.python_version()}")


def timed(function, repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """(median seconds, min seconds) over repeats."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


class PeakMemory:
    """Peak memory above the starting level during a `with` block, in bytes: CUDA's allocator peak, or on a
    CPU the resident set sampled every `interval` seconds."""

    def __init__(self, device: str, interval: float = 0.0002):
        self.device, self.interval, self.peak, self._running = device, interval, 0, False

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, self._rss() - self.start)
            time.sleep(self.interval)

    def __enter__(self):
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self._rss()
            self._running = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self._running = False
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.start)


def sweep_parser(description: str, modes, scheduler: str):
    """An argument parser with the arguments the sweep benchmarks share."""
    import argparse
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui-path", default=os.environ.get("COMFYUI_PATH"))
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size / 8)")
    parser.add_argument("--modes", nargs="+", default=list(modes), choices=modes)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default=scheduler)
    parser.add_argument("--seed", type=int, default=1)
    return parser

