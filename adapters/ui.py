"""Images shown on a node: saved to ComfyUI's temp folder, as its PreviewImage does."""
import random

import numpy as np
import torch
from PIL import Image

from .runtime import comfy


def preview_images(images: torch.Tensor, prefix: str = "latentlab") -> list[dict]:
    """IMAGE [B, H, W, 3] -> the `ui.images` entries ComfyUI's frontend shows; [] outside ComfyUI."""
    fp = comfy("folder_paths")
    if fp is None:
        return []
    prefix = prefix + "_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
    folder, filename, counter, subfolder, _ = fp.get_save_image_path(
        prefix, fp.get_temp_directory(), images.shape[2], images.shape[1])
    entries = []
    for image in images:
        array = (image.detach().cpu().float().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        name = f"{filename}_{counter:05}_.png"
        Image.fromarray(array).save(f"{folder}/{name}", compress_level=1)
        entries.append({"filename": name, "subfolder": subfolder, "type": "temp"})
        counter += 1
    return entries
