"""Devices, interrupts and progress: ComfyUI's when it is there, plain torch otherwise."""
import importlib
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def comfy(module: str):
    """A ComfyUI module, or None when running outside ComfyUI."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def torch_device() -> torch.device:
    mm = comfy("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    mm = comfy("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def check_interrupt() -> None:
    """Raises ComfyUI's InterruptProcessingException when the user pressed Cancel."""
    mm = comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def soft_empty_cache() -> None:
    mm = comfy("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


class Progress:
    """One progress bar; checks for interrupt on every update."""

    def __init__(self, total: int):
        utils = comfy("comfy.utils")
        self.bar = utils.ProgressBar(total) if utils is not None else None
        self.done = 0
        self.total = total

    def update(self, steps: int = 1) -> None:
        check_interrupt()
        self.done += steps
        if self.bar is not None:
            self.bar.update(steps)
