"""Every registered node keeps ComfyUI's classic contract and our conventions."""
import inspect
import re

import pytest

import latent_lab
from latent_lab.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
NODES = sorted(NODE_CLASS_MAPPINGS.items())


def declared_inputs(cls) -> dict:
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    return {**spec.get("required", {}), **spec.get("optional", {})}, spec


def test_package_exports_what_comfyui_reads():
    assert latent_lab.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert set(latent_lab.NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    assert latent_lab.WEB_DIRECTORY == "./js"
    assert all(key.startswith("LatentLab") for key in NODE_CLASS_MAPPINGS)
    assert all(name.endswith("(Latent Lab)") for name in NODE_DISPLAY_NAME_MAPPINGS.values())


@pytest.mark.parametrize("key,cls", NODES)
def test_inputs_are_well_formed_with_tooltips_and_sane_defaults(key, cls):
    inputs, _ = declared_inputs(cls)
    for name, spec in inputs.items():
        assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, (key, name)
        kind = spec[0]
        options = spec[1] if len(spec) > 1 else {}
        assert options.get("tooltip"), f"{key}.{name} has no tooltip"
        if isinstance(kind, list):
            assert kind, f"{key}.{name} is an empty combo"
            if "default" in options:
                assert options["default"] in kind, (key, name)
        else:
            assert isinstance(kind, str) and re.fullmatch(r"[A-Z_]+[A-Z0-9_]*|\*", kind), (key, name, kind)
        if kind in ("INT", "FLOAT"):
            assert "default" in options, (key, name)
            low, high = options.get("min", float("-inf")), options.get("max", float("inf"))
            assert low <= options["default"] <= high, (key, name)
            if kind == "INT":
                assert isinstance(options["default"], int)
        if kind == "BOOLEAN":
            assert isinstance(options.get("default"), bool), (key, name)


@pytest.mark.parametrize("key,cls", NODES)
def test_function_takes_exactly_the_declared_inputs(key, cls):
    inputs, spec = declared_inputs(cls)
    function = getattr(cls, cls.FUNCTION)
    params = inspect.signature(function).parameters
    names = [p for p in params if p != "self"]
    assert set(names) == set(inputs) | set(spec.get("hidden", {})), key
    optional = set(spec.get("optional", {}))
    for name in names:
        has_default = params[name].default is not inspect.Parameter.empty
        assert has_default == (name in optional), f"{key}.{name}: optional inputs and only they need a default"


@pytest.mark.parametrize("key,cls", NODES)
def test_outputs_and_metadata(key, cls):
    assert isinstance(cls.RETURN_TYPES, tuple) and isinstance(cls.RETURN_NAMES, tuple)
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS), key
    assert all(cls.OUTPUT_TOOLTIPS), key
    assert cls.CATEGORY.startswith("Latent Lab/"), key
    assert len(cls.DESCRIPTION) > 40, key


@pytest.mark.parametrize("key,cls", [(k, c) for k, c in NODES if hasattr(c, "VALIDATE_INPUTS")])
def test_validate_inputs_names_real_inputs(key, cls):
    inputs, _ = declared_inputs(cls)
    params = [p for p in inspect.signature(cls.VALIDATE_INPUTS).parameters if p not in ("cls", "input_types")]
    assert set(params) <= set(inputs), key
