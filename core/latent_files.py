"""Which .latent files the Latent Explorer may read, and where they are: plain functions, no web server.

Roots are named folders ({"output": "/path/to/output", "input": ...}). A request names a root, a subfolder
and a file name. Only regular `.latent` files whose real path (symlinks resolved) stays inside the root's real
path are served; absolute paths, `..`, hidden names and oversized files are refused with a status and a message.
"""
import json
import os
import struct

from .errors import LatentLabInputError
from .safefiles import inside
from .validate import excerpt

SUFFIX = ".latent"
MAX_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_LISTED = 2000
ROOT_TYPES = ("output", "input")


class LatentFileError(LatentLabInputError):
    """A refused request: `status` is the HTTP status a server should answer with."""

    def __init__(self, status: int, problem: str, fix: str = ""):
        self.status = status
        super().__init__(problem, fix)

    def as_json(self) -> dict:
        return {"error": self.problem, "fix": self.fix, "status": self.status}


def _plain_parts(text: str, what: str) -> list:
    """A relative path's parts; refuses absolute paths, drive letters, '..', hidden and empty parts."""
    if not isinstance(text, str) or "\x00" in text:
        raise LatentFileError(400, f"The {what} is not text.", "Pick a file from the Explorer's list.")
    normalized = text.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise LatentFileError(403, f"The {what} '{excerpt(text, 80)}' is an absolute path.",
                              "Name files relative to ComfyUI's output or input folder.")
    parts = [p for p in normalized.split("/") if p not in ("", ".")]
    for part in parts:
        if part == ".." or part.startswith("."):
            raise LatentFileError(403, f"The {what} '{excerpt(text, 80)}' leaves its folder or names a hidden file.",
                                  "Pick a file from the Explorer's list.")
    return parts


def resolve(roots: dict, root_type: str, filename: str, subfolder: str = "", max_bytes: int = MAX_BYTES) -> str:
    """The real path of an allowed .latent file, or LatentFileError (400/403/404/413)."""
    if root_type not in roots:
        raise LatentFileError(400, f"Unknown folder type '{excerpt(root_type)}'.",
                              f"Use one of: {', '.join(sorted(roots))}.")
    name_parts = _plain_parts(filename, "file name")
    if not name_parts:
        raise LatentFileError(400, "No file name was given.", "Pick a file from the Explorer's list.")
    if len(name_parts) != 1:
        raise LatentFileError(400, f"The file name '{excerpt(filename, 80)}' contains a folder.",
                              "Give the folder as 'subfolder' and the plain name as 'filename'.")
    if not name_parts[0].lower().endswith(SUFFIX):
        raise LatentFileError(403, f"'{excerpt(filename, 80)}' is not a {SUFFIX} file.",
                              f"The Explorer reads only {SUFFIX} files (ComfyUI's Save Latent writes them).")
    root = roots[root_type]
    path = os.path.join(root, *_plain_parts(subfolder or "", "subfolder"), name_parts[0])
    if not inside(root, path):
        raise LatentFileError(403, f"'{excerpt(filename, 80)}' leads outside the {root_type} folder (through a link).",
                              f"Copy the file into ComfyUI's {root_type} folder instead of linking it.")
    if not os.path.isfile(path):
        raise LatentFileError(404, f"There is no {SUFFIX} file '{_shown(subfolder, filename)}' in the "
                              f"{root_type} folder.", "Refresh the Explorer's list; the file may have been moved.")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise LatentFileError(413, f"'{excerpt(filename, 80)}' is {size / 2**20:.1f} MiB; the Explorer reads files "
                              f"up to {max_bytes / 2**20:.0f} MiB.", "Save a smaller latent (fewer batch items).")
    return os.path.realpath(path)


def _shown(subfolder: str, filename: str) -> str:
    return excerpt(f"{subfolder.strip('/')}/{filename}" if subfolder else filename, 80)


def list_files(roots: dict, max_bytes: int = MAX_BYTES, limit: int = MAX_LISTED) -> list:
    """Every allowed .latent file under the roots, newest first: type, filename, subfolder, size, mtime, ...
    Headers are read for the listed files only."""
    found = []
    for root_type, root in roots.items():
        if not root or not os.path.isdir(root):
            continue
        real_root = os.path.realpath(root)
        for directory, folders, files in os.walk(root, followlinks=False):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            for name in files:
                if name.startswith(".") or not name.lower().endswith(SUFFIX):
                    continue
                path = os.path.join(directory, name)
                if inside(real_root, path) and os.path.isfile(path):
                    found.append(_entry(root_type, root, path, max_bytes))
    found.sort(key=lambda e: (-e["mtime"], e["type"], e["subfolder"], e["filename"]))
    listed = found[:limit]
    for entry in listed:
        entry.update(header_summary(entry.pop("path")))
    return listed


def _entry(root_type: str, root: str, path: str, max_bytes: int) -> dict:
    stat = os.stat(path)
    subfolder = os.path.relpath(os.path.dirname(path), root)
    return {
        "type": root_type,
        "filename": os.path.basename(path),
        "subfolder": "" if subfolder == "." else subfolder.replace(os.sep, "/"),
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "too_large": stat.st_size > max_bytes,
        "path": path,
    }


def header_summary(path: str) -> dict:
    """Shape and dtype of the file's latent tensor from its safetensors header (no tensor data read)."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ValueError("file too short")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
        tensor = header.get("latent_tensor")
        if not isinstance(tensor, dict):
            raise ValueError("no latent_tensor")
        return {"shape": list(tensor["shape"]), "dtype": tensor["dtype"],
                "legacy_scale": "latent_format_version_0" not in header}
    except RecursionError:  # a header nested deeper than Python's stack
        return {"shape": None, "dtype": None, "unreadable": "header nested too deeply"}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return {"shape": None, "dtype": None, "unreadable": excerpt(str(error), 120)}
