"""Per-channel statistics of a latent batch."""
import torch

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def channel_stats(values: torch.Tensor, sigma_k: float = 3.0) -> dict:
    """values: [C, N] -> per-channel mean, std, min, max, percentiles and share beyond k sigma."""
    values = values.double()
    mean = values.mean(dim=1)
    std = values.std(dim=1, correction=0)
    quantiles = torch.quantile(values, torch.tensor([p / 100 for p in PERCENTILES], dtype=values.dtype), dim=1)
    deviation = (values - mean[:, None]).abs()
    beyond = (deviation > sigma_k * std[:, None]).double().mean(dim=1)
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "min": values.min(dim=1).values.tolist(),
        "max": values.max(dim=1).values.tolist(),
        "percentiles": {f"p{p}": quantiles[i].tolist() for i, p in enumerate(PERCENTILES)},
        "beyond_k_sigma": beyond.tolist(),
    }


def per_item_stats(latent: torch.Tensor, sigma_k: float = 3.0) -> list[dict]:
    """[B, C, H, W] -> one channel_stats dict per batch item."""
    flat = latent.flatten(2)
    return [channel_stats(item, sigma_k) for item in flat]


def batch_stats(latent: torch.Tensor, sigma_k: float = 3.0) -> dict:
    return channel_stats(latent.transpose(0, 1).flatten(1), sigma_k)
