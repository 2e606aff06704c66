"""Import the repository as the package `latent_lab`, with the loader tests/conftest.py and benchmarks/ use."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from conftest import load_pack  # noqa: E402,F401  (conftest loads the pack as `latent_lab` when imported)
