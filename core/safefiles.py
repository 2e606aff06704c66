"""Safetensors files written whole or not at all, and read with clear errors: sizes and the header checked before
any tensor is read."""
import json
import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import LatentLabInputError, require
from .validate import excerpt


MAX_NAME_BYTES = 255  # one file or folder name: the limit of ext4, APFS and NTFS (NTFS counts UTF-16 units)
MAX_PATH = 259 if os.name == "nt" else 4095  # Windows without long-path support; Linux PATH_MAX
# Windows opens a device, not a file, for these names with any extension ('con.safetensors', 'nul.txt').
RESERVED_NAMES = frozenset(["con", "prn", "aux", "nul"] + [f"{d}{n}" for d in ("com", "lpt")
                                                            for n in "123456789\u00b9\u00b2\u00b3"])


def name_problem(name: str) -> str | None:
    """Why one file or folder name cannot be used on every system ComfyUI runs on, or None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long; file names may have at most {MAX_NAME_BYTES}"
    if name.split(".")[0].rstrip(" ").lower() in RESERVED_NAMES:
        return "is a reserved device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with any extension)"
    return None


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


MAX_HEADER_BYTES = 1024 * 1024  # our files' headers are a few kilobytes
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
REFIT = "Re-create it with the matching Latent Lab fit node."


def read_header(path: str, what: str, max_bytes: int) -> tuple[dict, dict]:
    """({tensor name: (dtype, shape)}, metadata) from a safetensors header alone, no tensor data read; the file
    size, header size and header structure are checked first, so nothing large is read or parsed."""
    name = short_name(path)
    require(path.lower().endswith(".safetensors"),
            f"'{name}' is not a .safetensors file.", f"Latent Lab reads {what} only from .safetensors files.")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
            fits = length is not None and length <= min(MAX_HEADER_BYTES, size - 8)
            raw = handle.read(length) if fits and size <= max_bytes else None
    except OSError as error:
        raise LatentLabInputError(f"Could not read {what} file '{name}': {excerpt(error.strerror or str(error))}.",
                                  "Check the file's permissions, or re-create it.") from error
    require(size <= max_bytes, f"The {what} file '{name}' is {size / 2**20:.1f} MiB; Latent Lab's {what} files are "
            f"at most {max_bytes / 2**20:.1f} MiB.", REFIT)
    require(raw is not None, f"Could not read {what} file '{name}': its header is missing or larger than "
            f"{MAX_HEADER_BYTES // 1024} KiB.", REFIT)
    header = _json_object(raw, f"{what} file '{name}'")
    metadata = header.pop("__metadata__", None) or {}
    require(isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()),
            f"Could not read {what} file '{name}': its metadata is not a table of texts.", REFIT)
    return {key: _tensor_spec(key, entry, name, what) for key, entry in header.items()}, metadata


def read_tensors(path: str, what: str) -> dict:
    """Every tensor of a safetensors file, on the CPU (check the header with read_header first)."""
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentLabInputError(f"Could not read {what} file '{short_name(path)}': {excerpt(str(error), 120)}.",
                                  REFIT) from error


def read(path: str, what: str, max_bytes: int) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file of at most max_bytes; anything else is a clear error."""
    _, metadata = read_header(path, what, max_bytes)
    return read_tensors(path, what), metadata


def short_name(path: str) -> str:
    return excerpt(os.path.basename(path), 80)


def _json_object(raw: bytes, where: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than Python's stack
        reason = "nested too deeply" if isinstance(error, RecursionError) else excerpt(str(error), 80)
        raise LatentLabInputError(f"Could not read {where}: its header is not JSON ({reason}).", REFIT) from None
    require(isinstance(value, dict), f"Could not read {where}: its header is not a JSON object.", REFIT)
    return value


def _tensor_spec(key: str, entry, name: str, what: str) -> tuple:
    shape = entry.get("shape") if isinstance(entry, dict) else None
    dtype = entry.get("dtype") if isinstance(entry, dict) else None
    require(isinstance(shape, list) and len(shape) <= 8 and all(isinstance(n, int) and not isinstance(n, bool)
                                                                and 0 <= n < 2 ** 40 for n in shape),
            f"Could not read {what} file '{name}': tensor '{excerpt(key)}' has no valid shape.", REFIT)
    require(dtype in FLOAT_DTYPES, f"'{name}': tensor '{excerpt(key)}' holds {excerpt(dtype)} values, not floats.",
            REFIT)
    return dtype, tuple(shape)


def check_specs(specs: dict, expected: dict, name: str) -> None:
    """The header's tensors are exactly the expected names and shapes: checked before any tensor is read."""
    extra = sorted(set(specs) - set(expected))
    require(not extra, f"'{name}' holds tensors this file does not use: "
            f"{', '.join(excerpt(k) for k in extra[:5])}.", REFIT)
    for key, shape in expected.items():
        require(key in specs, f"'{name}' has no '{key}' tensor.",
                "It was not made by Latent Lab's fit node; re-fit it.")
        require(specs[key][1] == tuple(shape), f"'{name}': tensor '{key}' has shape {specs[key][1]}, expected "
                f"{tuple(shape)}.", "The file does not match this latent; re-fit it for this VAE.")


def expect_tensor(tensors: dict, key: str, shape: tuple, name: str) -> torch.Tensor:
    require(key in tensors, f"'{name}' has no '{key}' tensor.", "It was not made by Latent Lab's fit node; re-fit it.")
    tensor = tensors[key]
    require(tensor.is_floating_point(), f"'{name}': tensor '{key}' holds {tensor.dtype} values, not floats.",
            "Re-fit it.")
    require(tuple(tensor.shape) == tuple(shape),
            f"'{name}': tensor '{key}' has shape {tuple(tensor.shape)}, expected {tuple(shape)}.",
            "The file does not match this latent; re-fit it for this VAE.")
    require(bool(torch.isfinite(tensor).all()), f"'{name}': tensor '{key}' holds NaN or infinite values.", "Re-fit it.")
    return tensor.float()
