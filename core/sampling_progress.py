"""Where a model call sits in sampling, as a fraction 0 <= p < 1: of one run's sigmas, or of the model's noise range."""
import math
from typing import Callable, Sequence


def run_progress(sigma: float, sigmas: Sequence[float]) -> float:
    """Where a model call at `sigma` sits in a run over `sigmas` (decreasing, usually ending at 0): 0 <= p < 1.

    Step i of N (called at sigmas[i]) is at i / N; calls between two sigmas (Heun, DPM2, adaptive solvers)
    are placed by log-sigma interpolation, or linearly in the last interval when it ends at 0.
    """
    steps = len(sigmas) - 1
    if steps < 1 or sigma >= sigmas[0]:
        return 0.0
    for i in range(steps):
        high, low = sigmas[i], sigmas[i + 1]
        if high > low and high >= sigma >= low:
            if low > 0:
                fraction = (math.log(high) - math.log(sigma)) / (math.log(high) - math.log(low))
            else:
                fraction = (high - sigma) / high
            return min((i + fraction) / steps, math.nextafter(1.0, 0.0))
    nearest = min(range(len(sigmas)), key=lambda j: abs(sigmas[j] - sigma))
    return min(nearest / steps, math.nextafter(1.0, 0.0))


def model_progress(sigma: float, percent_to_sigma: Callable[[float], float], iterations: int = 40) -> float:
    """Percent of the model's whole noise range (ComfyUI's percent_to_sigma, inverted by bisection), 0 <= p < 1."""
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        if percent_to_sigma(middle) > sigma:
            low = middle
        else:
            high = middle
    return min(low, math.nextafter(1.0, 0.0))
