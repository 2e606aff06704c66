"""Our model folders, registered with ComfyUI's folder_paths.

A user-supplied name never leaves its folder. Outside ComfyUI (tests, scripts) the
folders come from LATENT_LAB_MODELS_DIR; with neither, nothing is listed or written.
"""
import functools
import os

from ..core.errors import LatentLabInputError, require
from ..core.safefiles import MAX_PATH, inside, name_problem
from ..core.validate import excerpt
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
    """Full path of an existing file in our folder; a missing file says how to make or get it, a link that leads
    out of the folder says so."""
    require(isinstance(name, str) and name.strip() != "", f"No {FOLDERS[kind]} file was chosen.", make_hint)
    shown = excerpt(name, 80)
    require(len(name) <= MAX_PATH, f"The file name '{shown}' is {len(name):,} characters long; this system allows "
            f"{MAX_PATH}.", f"Pick a file from the list; files live in models/{kind}/.")
    parts = name.replace("\\", "/").split("/")
    require(not os.path.isabs(name) and ".." not in parts,
            f"'{shown}' is not a plain file name inside the {kind} folder.",
            f"Pick a file from the list; files live in models/{kind}/.")
    for part in parts:
        problem = name_problem(part)
        require(problem is None, f"'{excerpt(part, 80)}' {problem}.", f"Pick a file from the list; files live in "
                f"models/{kind}/.")
    linked = None
    for root in folder_paths_for(kind):
        path = os.path.join(root, name)
        if os.path.isfile(path) and inside(root, path):
            return path
        if os.path.lexists(path):
            linked = linked or path
    if linked is not None:
        raise LatentLabInputError(_not_a_file(kind, shown, linked),
                                  f"Copy the file into models/{kind}/ instead of linking it, or add its folder "
                                  f"to ComfyUI's extra_model_paths.yaml under the key '{kind}'.")
    raise LatentLabInputError(
        f"The {FOLDERS[kind]} file '{shown}' is not in models/{kind}/ on this machine.",
        make_hint + f" Or copy the file from whoever shared this workflow into models/{kind}/.")


def _not_a_file(kind: str, shown: str, path: str) -> str:
    if not os.path.exists(path):
        return f"'{shown}' in models/{kind}/ is a link to a file that does not exist."
    if os.path.isfile(path):
        return (f"'{shown}' is a link to a file that is not in models/{kind}/ (it leads outside the folder, where "
                "Latent Lab does not read).")
    return f"'{shown}' in models/{kind}/ is not a regular file."


def output_path(kind: str, name: str) -> str:
    """Where to save a new file: a checked name inside the first folder of `kind`. Everything that could make
    the save fail (characters, length, reserved names) is checked here, before any work is done."""
    require(isinstance(name, str) and name and all(c.isalnum() or c in "-_. " for c in name)
            and not name.startswith("."),
            f"'{excerpt(name, 80)}' is not a valid file name.",
            "Use letters, digits, spaces, '-', '_' and '.', with no folder separators.")
    if not name.lower().endswith(EXTENSION):
        name += EXTENSION
    problem = name_problem(name)
    require(problem is None, f"The file name '{excerpt(name, 80)}' {problem}.", "Choose a shorter or other name.")
    roots = folder_paths_for(kind)
    require(bool(roots), f"No models/{kind}/ folder is known outside ComfyUI.",
            f"Run inside ComfyUI, or set {ENV_DIR} to a folder for Latent Lab's files.")
    path = os.path.join(roots[0], name)
    require(inside(roots[0], path), f"'{excerpt(name, 80)}' would leave the {kind} folder.", "Use a plain file name.")
    require(len(os.path.abspath(path)) <= MAX_PATH,
            f"The path models/{kind}/{excerpt(name, 80)} would be {len(os.path.abspath(path))} characters long; "
            f"this system allows {MAX_PATH}.", "Choose a shorter file name.")
    return path


@functools.lru_cache(maxsize=16)
def _read(loader, path: str, mtime: float):
    return loader(path)


def load_named(kind: str, name: str, make_hint: str, loader):
    """loader(path) for a file picked by name in our folder `kind`; read again only when the file changes."""
    path = resolve(kind, name, make_hint)
    return _read(loader, path, os.path.getmtime(path))

