"""The pack loaded as `latent_lab` by tools/_pack.py (the way ComfyUI's loader imports it), and test ordering."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from _pack import load_pack  # noqa: E402

load_pack()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # shared test doubles: `import doubles`


def pytest_collection_modifyitems(config, items):
    """Unit tests first: integration tests import ComfyUI into the process."""
    items.sort(key=lambda item: "integration" in str(item.fspath))
