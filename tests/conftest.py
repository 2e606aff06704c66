"""Load the pack the way ComfyUI's loader does: a package from the repository root, relative imports inside."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "latent_lab"


def load_pack():
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


load_pack()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # shared test doubles: `import doubles`


def pytest_collection_modifyitems(config, items):
    """Unit tests first: integration tests import ComfyUI into the process."""
    items.sort(key=lambda item: "integration" in str(item.fspath))
