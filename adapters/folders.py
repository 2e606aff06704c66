"""Our model folders, registered with ComfyUI's folder_paths.

A user-supplied name never leaves its folder. Outside ComfyUI (tests, scripts) the
folders come from LATENT_LAB_MODELS_DIR; with neither, nothing is listed or written.
"""
import os

from ..core.errors import LatentLabInputError, require
from ..core.safefiles import inside
from .runtime import comfy

FOLDERS = {
    "latent_rgb": "fitted latent -> RGB factors",
    "latent_bridges": "fitted SD1.5 <-> SDXL latent bridges",
}
EXTENSION = ".safetensors"
ENV_DIR = "LATENT_LAB_MODELS_DIR"


def register() -> None:
    fp = comfy("folder_paths")
    if fp is None:
        return
    for kind in FOLDERS:
        fp.add_model_folder_path(kind, os.path.join(fp.models_dir, kind))
        paths, extensions = fp.folder_names_and_paths[kind]
        fp.folder_names_and_paths[kind] = (paths, {EXTENSION} | set(extensions or ()))


def folder_paths_for(kind: str) -> list[str]:
    fp = comfy("folder_paths")
    if fp is not None:
        register()
        return fp.get_folder_paths(kind)
    base = os.environ.get(ENV_DIR)
    return [os.path.join(base, kind)] if base else []


def list_files(kind: str) -> list[str]:
    fp = comfy("folder_paths")
    if fp is not None:
        register()
        return [n for n in fp.get_filename_list(kind) if n.lower().endswith(EXTENSION)]
    names = []
    for root in folder_paths_for(kind):
        if os.path.isdir(root):
            for dirpath, _, files in os.walk(root):
                rel = os.path.relpath(dirpath, root)
                names += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/") for f in files if f.lower().endswith(EXTENSION)]
    return sorted(names)


def resolve(kind: str, name: str, make_hint: str) -> str:
    """Full path of an existing file in our folder; a missing file says how to make or get it."""
    require(isinstance(name, str) and name.strip() != "", f"No {FOLDERS[kind]} file was chosen.", make_hint)
    require(not os.path.isabs(name) and ".." not in name.replace("\\", "/").split("/"),
            f"'{name}' is not a plain file name inside the {kind} folder.",
            f"Pick a file from the list; files live in models/{kind}/.")
    for root in folder_paths_for(kind):
        path = os.path.join(root, name)
        if os.path.isfile(path) and inside(root, path):
            return path
    raise LatentLabInputError(
        f"The {FOLDERS[kind]} file '{name}' is not in models/{kind}/ on this machine.",
        make_hint + f" Or copy the file from whoever shared this workflow into models/{kind}/.")


def output_path(kind: str, name: str) -> str:
    """Where to save a new file: a sanitized name inside the first folder of `kind`."""
    require(name and all(c.isalnum() or c in "-_. " for c in name) and not name.startswith("."),
            f"'{name}' is not a valid file name.",
            "Use letters, digits, spaces, '-', '_' and '.', with no folder separators.")
    roots = folder_paths_for(kind)
    require(bool(roots), f"No models/{kind}/ folder is known outside ComfyUI.",
            f"Run inside ComfyUI, or set {ENV_DIR} to a folder for Latent Lab's files.")
    if not name.lower().endswith(EXTENSION):
        name += EXTENSION
    path = os.path.join(roots[0], name)
    require(inside(roots[0], path), f"'{name}' would leave the {kind} folder.", "Use a plain file name.")
    return path
