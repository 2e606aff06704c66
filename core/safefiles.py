"""Safetensors files written whole or not at all, and read with clear errors."""
import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import LatentLabInputError, require


def inside(root: str, path: str) -> bool:
    """Whether path, links followed, lies in root (or is root)."""
    root, path = os.path.realpath(root), os.path.realpath(path)
    return os.path.commonpath([root, path]) == root


def atomic_save(tensors: dict, path: str, metadata: dict) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves no half-written file."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, temporary,
                  metadata={k: str(v) for k, v in metadata.items()})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; saved files should read like any other
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read(path: str, what: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; anything else is a clear error."""
    name = os.path.basename(path)
    require(path.lower().endswith(".safetensors"),
            f"'{name}' is not a .safetensors file.", f"Latent Lab reads {what} only from .safetensors files.")
    try:
        tensors = load_file(path, device="cpu")
        with open(path, "rb") as handle:
            header = _header(handle)
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentLabInputError(f"Could not read {what} file '{name}': {error}.",
                                  "Re-create it with the matching Latent Lab fit node.") from error
    return tensors, header.get("__metadata__", {}) or {}


def _header(handle) -> dict:
    import json
    length = int.from_bytes(handle.read(8), "little")
    return json.loads(handle.read(length))


def expect_tensor(tensors: dict, key: str, shape: tuple, name: str) -> torch.Tensor:
    require(key in tensors, f"'{name}' has no '{key}' tensor.", "It was not made by Latent Lab's fit node; re-fit it.")
    tensor = tensors[key]
    require(tuple(tensor.shape) == tuple(shape),
            f"'{name}': tensor '{key}' has shape {tuple(tensor.shape)}, expected {tuple(shape)}.",
            "The file does not match this latent; re-fit it for this VAE.")
    require(bool(torch.isfinite(tensor).all()), f"'{name}': tensor '{key}' holds NaN or infinite values.", "Re-fit it.")
    return tensor.float()
