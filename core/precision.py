"""The float type for sums and per-channel figures of latents: wide enough that finite values never overflow."""
import torch


def wide_dtype(device: torch.device) -> torch.dtype:
    """float64, whose range holds any sum of float32 values; float32 on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64
