"""Import the repository as the package `latent_lab`, as ComfyUI's loader and tests/conftest.py do."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack():
    if "latent_lab" not in sys.modules:
        spec = importlib.util.spec_from_file_location("latent_lab", os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules["latent_lab"] = module
        spec.loader.exec_module(module)
    return sys.modules["latent_lab"]
