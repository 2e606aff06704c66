"""Devices, interrupts and progress: ComfyUI's when it is there, plain torch otherwise."""
import importlib

import torch

_loaded = {}


def comfy(module: str):
    """A ComfyUI module, or None when running outside ComfyUI.

    Only modules found are remembered: a process that imports ComfyUI later (the test suite does) finds it then.
    """
    found = _loaded.get(module)
    if found is None:
        try:
            found = _loaded[module] = importlib.import_module(module)
        except ImportError:
            return None
    return found


comfy.cache_clear = _loaded.clear


def torch_device() -> torch.device:
    mm = comfy("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    mm = comfy("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def free_memory(device, patcher=None) -> float:
    """Bytes free on `device` for work of `patcher` (a ComfyUI ModelPatcher); inf outside ComfyUI.

    A patcher that can answer is asked: with dynamic VRAM, memory held by idle models counts as free to it (they
    are evicted on demand) but not to model_management.get_free_memory.
    """
    ask = getattr(patcher, "get_free_memory", None)
    if callable(ask):
        return float(ask(device))
    mm = comfy("comfy.model_management")
    return float(mm.get_free_memory(device)) if mm is not None else float("inf")


def streams_weights(patcher) -> bool:
    """Whether the patcher loads weights on demand (dynamic VRAM): the whole model need not be resident."""
    dynamic = getattr(patcher, "is_dynamic", None)
    return bool(dynamic()) if callable(dynamic) else False


def is_out_of_memory(error: BaseException) -> bool:
    """ComfyUI's own test where it has one; otherwise torch's OutOfMemoryError, or an AcceleratorError whose CUDA
    code (2) or text says out of memory (newer torch raises that for allocation failures inside kernels)."""
    mm = comfy("comfy.model_management")
    if mm is not None and callable(getattr(mm, "is_oom", None)):
        return bool(mm.is_oom(error))
    if isinstance(error, torch.OutOfMemoryError):
        return True
    accelerator = getattr(torch, "AcceleratorError", None)
    return isinstance(accelerator, type) and isinstance(error, accelerator) and \
        (getattr(error, "error_code", None) == 2 or "out of memory" in str(error).lower())


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
