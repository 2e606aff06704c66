"""Node classes and their registration tables.

Each module in this package lists its nodes in `NODES = {key: (class, display name)}`.
"""
import importlib
import pkgutil

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    for _key, (_cls, _name) in getattr(importlib.import_module(f".{_module}", __name__), "NODES", {}).items():
        NODE_CLASS_MAPPINGS[_key] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_key] = f"{_name} (Latent Lab)"
