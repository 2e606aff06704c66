"""ComfyUI's latent-format classes (comfy.latent_formats) as Latent Lab formats.

Every class found in the running ComfyUI is read by feature: its latent_channels, latent_dimensions, RGB factors
(latent_rgb_factors, _bias, _reshape) and its own process_in/process_out, measured as a scale and shift per
channel (core.formats.measured_format). A class a newer ComfyUI adds works without a change here. A class whose
values equal a built-in format comes back as that format (with its channel names and extra factor sets).
"""
import functools
import inspect

import torch

from ..core.errors import LatentLabInputError, require
from ..core.formats import FIT_NODE_HINT, FORMATS, LatentFormat, format_for_comfy_class, measured_format
from .runtime import comfy

UNIT_TOLERANCE = 1e-6


def comfy_format_classes() -> dict:
    """{class name: class} of every latent format in comfy.latent_formats (its base class left out)."""
    module = comfy("comfy.latent_formats")
    if module is None:
        return {}
    base = getattr(module, "LatentFormat", None)
    return {name: cls for name, cls in inspect.getmembers(module, inspect.isclass)
            if base is not None and issubclass(cls, base) and cls is not base and cls.__module__ == module.__name__}


def comfy_formats() -> dict:
    """{class name: LatentFormat} of every ComfyUI class with RGB factors and image or video latents."""
    return dict(_comfy_formats(tuple(comfy_format_classes().items())))


@functools.lru_cache(maxsize=4)
def _comfy_formats(classes: tuple) -> tuple:
    found = []
    for name, cls in classes:
        try:
            instance = cls()
        except Exception:  # a class that needs arguments is not one a model hands over by name
            continue
        if getattr(instance, "latent_rgb_factors", None) is None:
            continue
        try:
            found.append((name, format_of_instance(instance)))
        except LatentLabInputError:
            continue  # audio, 3-D meshes and conversions that are not per-channel affine
    return tuple(found)


def format_catalog() -> dict:
    """Every format a node's format input accepts: the built-in keys, then ComfyUI's class names."""
    return {**FORMATS, **comfy_formats()}


def format_of_instance(latent_format) -> LatentFormat:
    """The LatentFormat of a ComfyUI latent-format instance, whatever its class. One without RGB factors gets
    units and channels but no factor set (previews then ask for a fitted factor file)."""
    name = type(latent_format).__name__
    require(hasattr(latent_format, "process_in") and hasattr(latent_format, "process_out"),
            f"'{name}' is not a ComfyUI latent format.", "Connect a MODEL output (Load Checkpoint...).")
    factors = getattr(latent_format, "latent_rgb_factors", None)
    channels = int(getattr(latent_format, "latent_channels", 4))
    dimensions = int(getattr(latent_format, "latent_dimensions", 2))
    rows = factors if factors is not None else [[0.0, 0.0, 0.0]] * channels
    fmt = measured_format(name, channels, dimensions, rows, getattr(latent_format, "latent_rgb_factors_bias", None),
                          _tensor_function(latent_format.process_in), _tensor_function(latent_format.process_out),
                          getattr(latent_format, "latent_rgb_factors_reshape", None) if factors is not None else None,
                          source=f"ComfyUI comfy/latent_formats.py {name}")
    if factors is None:
        return LatentFormat(fmt.key, fmt.label, fmt.channels, fmt.scale, fmt.shift, fmt.channel_names, {},
                            fmt.comfy_classes, fmt.dimensions)
    return _builtin_twin(fmt) or fmt


def _tensor_function(method):
    # process_in moves its constants to the latent's dtype: float64 in, float64 out.
    return lambda x: method(x.clone())


def _builtin_twin(fmt: LatentFormat) -> LatentFormat | None:
    """The built-in format with the same class name and the same values, if any."""
    for builtin in FORMATS.values():
        if fmt.key in builtin.comfy_classes and same_values(builtin, fmt):
            return builtin
    return None


def same_values(a: LatentFormat, b: LatentFormat) -> bool:
    """Channels, dimensions, units and ComfyUI factors equal (units to UNIT_TOLERANCE, relative)."""
    if (a.channels, a.dimensions) != (b.channels, b.dimensions) or "comfyui" not in a.factor_sets \
            or "comfyui" not in b.factor_sets:
        return False
    units_a, units_b = a.unit_vectors(), b.unit_vectors()
    close = all(torch.allclose(x, y, rtol=UNIT_TOLERANCE, atol=1e-12) for x, y in zip(units_a, units_b))
    fa, fb = a.factor_sets["comfyui"], b.factor_sets["comfyui"]
    return close and fa.weights == fb.weights and fa.bias == fb.bias and fa.unshuffle == fb.unshuffle


def model_format(model) -> LatentFormat | None:
    """The format of a MODEL (ComfyUI ModelPatcher) from its latent_format; None without a model."""
    if model is None:
        return None
    latent_format = model.get_model_object("latent_format") if hasattr(model, "get_model_object") \
        else getattr(getattr(model, "model", None), "latent_format", None)
    if latent_format is None:
        latent_format = getattr(model, "latent_format", None)
    if latent_format is None:
        return None
    if not hasattr(latent_format, "process_in"):  # not a ComfyUI LatentFormat: known by its class name only
        return format_for_comfy_class(type(latent_format).__name__)
    return format_of_instance(latent_format)


def no_factors_message(fmt: LatentFormat) -> tuple:
    return (f"ComfyUI's {fmt.label} format has no linear RGB factors.", FIT_NODE_HINT)
