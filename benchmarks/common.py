"""Shared bits for benchmark scripts: machine description, timing, peak memory."""
import os
import platform
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import conftest  # noqa: F401  (loads the pack as `latent_lab`)
    import latent_lab
    return latent_lab


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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
