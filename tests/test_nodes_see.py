import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import LATENT_FORMAT_KEY, SDXL
from latent_lab.nodes.see import LatentChannelMaps, LatentRGBPreview, LatentStats


def latent(*shape, seed=0, **extra):
    return {"samples": torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 6, **extra}


class FakeModelPatcher:
    """A stand-in for ComfyUI's ModelPatcher: get_model_object('latent_format') returns ComfyUI's class."""

    def __init__(self, class_name):
        self.format = type(class_name, (), {})()

    def get_model_object(self, name):
        assert name == "latent_format"
        return self.format


def test_preview_node_every_item_and_size():
    result = LatentRGBPreview().preview(latent(3, 4, 8, 8), "sdxl", "blog", "x8", "bilinear")
    assert result["result"][0].shape == (3, 64, 64, 3)
    assert result["ui"] == {}


def test_format_from_model_and_from_latent_tag():
    lat = latent(1, 4, 4, 4)
    via_model = LatentRGBPreview().preview(lat, "auto", "comfyui", "latent", "nearest", FakeModelPatcher("SDXL"))
    via_tag = LatentRGBPreview().preview({**lat, LATENT_FORMAT_KEY: "sdxl"}, "auto", "comfyui", "latent", "nearest")
    explicit = LatentRGBPreview().preview(lat, "sdxl", "comfyui", "latent", "nearest")
    assert torch.equal(via_model["result"][0], explicit["result"][0])
    assert torch.equal(via_tag["result"][0], explicit["result"][0])


def test_blog_factors_on_sd15_are_refused():
    with pytest.raises(LatentLabInputError, match="Latent RGB Preview: .*SDXL only"):
        LatentRGBPreview().preview(latent(1, 4, 4, 4), "sd15", "blog", "latent", "nearest")


@pytest.mark.parametrize("samples,message", [
    (torch.zeros(4, 8, 8), "4 dimensions|dimensions"),
    (torch.zeros(0, 4, 8, 8), "empty"),
    (torch.zeros(1, 4, 0, 8), "empty"),
    (torch.full((1, 4, 2, 2), float("nan")), "NaN"),
    (torch.full((1, 4, 2, 2), float("inf")), "NaN or infinite"),
    (torch.zeros(1, 4, 2, 2, 2), "Video latents"),
    (torch.zeros(1, 16, 2, 2), "16 channels but the SD1.x/2.x format has 4"),
])
def test_bad_latents_get_clear_errors_naming_the_node(samples, message):
    with pytest.raises(LatentLabInputError, match=f"Latent RGB Preview: .*({message})"):
        LatentRGBPreview().preview({"samples": samples}, "sd15", "comfyui", "latent", "nearest")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "nope.safetensors"])
def test_unknown_or_escaping_factor_files(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_LAB_MODELS_DIR", str(tmp_path))
    (tmp_path / "latent_rgb").mkdir()
    with pytest.raises(LatentLabInputError, match="Latent RGB Preview"):
        LatentRGBPreview().preview(latent(1, 4, 4, 4), "sd15", name, "latent", "nearest")
    message = LatentRGBPreview.VALIDATE_INPUTS(name)
    assert isinstance(message, str) and ("Fit Latent RGB Factors" in message or "plain file name" in message)


def test_channel_maps_raw_units_need_no_format_and_label_every_channel():
    lat = latent(2, 4, 6, 6)
    before = lat["samples"].clone()
    maps = LatentChannelMaps().maps(lat, "auto", "raw", "per_channel", 8)["result"][0]
    assert maps.shape[0] == 2 and maps.shape[-1] == 3
    assert torch.equal(lat["samples"], before)
    with pytest.raises(LatentLabInputError, match="Latent Channel Maps: .*ambiguous"):
        LatentChannelMaps().maps(lat, "auto", "scaled", "shared", 4)


def test_channel_maps_colors_follow_sign():
    samples = torch.zeros(1, 4, 4, 4)
    samples[0, 0, :, :2] = -1.0
    samples[0, 0, :, 2:] = 1.0
    image = LatentChannelMaps().maps({"samples": samples}, "sdxl", "raw", "per_channel", 4)["result"][0][0]
    bottom = image[-6]  # last pixel row of the tiles, above the 4-pixel gap
    left, right = bottom[6], bottom[16]
    assert left[2] > left[0] and right[0] > right[2]


def test_stats_node_text_json_and_histogram_agree():
    lat = latent(2, 4, 8, 8)
    result = LatentStats().stats(lat, "sdxl", "scaled", 3.0, "comfyui")
    report = json.loads(result["result"][0])
    scaled = SDXL.to_scaled(lat["samples"])
    assert report["batch"][0]["mean"] == pytest.approx(scaled[:, 0].mean().item(), abs=1e-6)
    assert report["items"][1]["channels"][3]["max"] == pytest.approx(scaled[1, 3].max().item(), abs=1e-6)
    assert report["channel_names"] == ["luminance", "cyan/red", "lime/purple", "pattern"]
    assert report["color_cast"]["hex"].startswith("#")
    assert f"{report['batch'][0]['mean']:+.3f}" in result["ui"]["text"][0]
    assert result["result"][1].shape == (1, 320, 640, 3)


@settings(max_examples=25, deadline=None)
@given(shift=st.floats(-3, 3), scale=st.floats(0.1, 4))
def test_stats_follow_a_known_transform(shift, scale):
    base = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    report = json.loads(LatentStats().stats({"samples": base * scale + shift}, "sdxl", "raw", 3.0, "comfyui")["result"][0])
    for c in range(4):
        row = report["batch"][c]
        assert row["mean"] == pytest.approx(base[0, c].mean().item() * scale + shift, abs=1e-4)
        assert row["std"] == pytest.approx(base[0, c].std(correction=0).item() * scale, rel=1e-4)
        assert row["beyond_k_sigma"] == pytest.approx(
            ((base[0, c] - base[0, c].mean()).abs() > 3 * base[0, c].std(correction=0)).float().mean().item(), abs=1e-6)


def test_stats_color_cast_is_the_mean_preview_color():
    samples = torch.zeros(1, 4, 4, 4)
    report = json.loads(LatentStats().stats({"samples": samples}, "sdxl", "scaled", 3.0, "comfyui")["result"][0])
    expected = [(b + 1) / 2 for b in (0.1084, -0.0175, -0.0011)]
    assert report["color_cast"]["rgb"] == pytest.approx(expected, abs=1e-4)


# ------------------------------------------------------------------------------------------------ value range

FLOAT32_MAX = float(np.finfo(np.float32).max)


@st.composite
def extreme_latents(draw):
    """Finite float32 latents: any float32 values, or values of one magnitude (all huge, all subnormal...)."""
    shape = (draw(st.integers(1, 2)), 4, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if draw(st.booleans()):
        elements = st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=32, allow_nan=False, allow_infinity=False)
        return torch.from_numpy(draw(arrays(np.float32, shape, elements=elements)))
    unit = torch.from_numpy(draw(arrays(np.float32, shape, elements=st.floats(-1, 1, width=32))))
    magnitude = draw(st.sampled_from([FLOAT32_MAX, 3e37, 1e30, 1.0, 1e-30, 1e-40, 1e-45]))
    return (unit.double() * magnitude).float()


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON")
    return json.loads(text, parse_constant=refuse)


@settings(max_examples=60, deadline=None)
@given(samples=extreme_latents(), fmt=st.sampled_from(["sdxl", "sd15"]), units=st.sampled_from(["raw", "scaled"]))
def test_see_nodes_give_finite_pictures_and_plain_json_for_any_finite_latent(samples, fmt, units):
    lat = {"samples": samples}
    result = LatentStats().stats(lat, fmt, units, 3.0, "comfyui")
    report = strict_json(result["result"][0])
    for row in report["batch"] + [c for item in report["items"] for c in item["channels"]]:
        assert all(np.isfinite(row[key]) for key in ("mean", "std", "min", "max", "beyond_k_sigma"))
    assert not re.search(r"\b(nan|inf)\b", result["ui"]["text"][0])
    assert torch.isfinite(result["result"][1]).all()
    preview = LatentRGBPreview().preview(lat, fmt, "comfyui", "latent", "nearest")["result"][0]
    assert torch.isfinite(preview).all() and preview.min() >= 0 and preview.max() <= 1
    maps = LatentChannelMaps().maps(lat, fmt, units, "per_channel", 1)["result"][0]
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("fmt", ["sdxl", "sd3"])
def test_stats_and_maps_of_a_latent_all_3e37(fmt):
    channels = 4 if fmt == "sdxl" else 16
    lat = {"samples": torch.full((1, channels, 4, 4), 3e37)}
    report = strict_json(LatentStats().stats(lat, fmt, "scaled", 3.0, "comfyui")["result"][0])
    scale = SDXL.scale if fmt == "sdxl" else 1.5305
    shift = 0.0 if fmt == "sdxl" else 0.0609
    assert report["batch"][0]["mean"] == pytest.approx((3e37 - shift) * scale, rel=1e-6)
    assert report["batch"][0]["std"] == 0.0 and report["color_cast"]["hex"].startswith("#")
    assert torch.isfinite(LatentChannelMaps().maps(lat, fmt, "scaled", "shared", 1)["result"][0]).all()


@pytest.mark.parametrize("sigma_k", [float("nan"), float("inf"), -1.0, 0.0, 11.0])
def test_stats_refuse_a_sigma_k_outside_its_range(sigma_k):
    with pytest.raises(LatentLabInputError, match=r"Latent Stats: sigma_k .* is outside 0.5..10"):
        LatentStats().stats(latent(1, 4, 4, 4), "sdxl", "raw", sigma_k, "comfyui")
