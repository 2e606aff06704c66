import pytest
import torch
from hypothesis import given, settings, strategies as st

from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import FORMATS, SD15, SDXL, FLUX, format_for_comfy_class, resolve_format
from latent_lab.core.preview import linear_rgb


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(sorted(FORMATS)), seed=st.integers(0, 2**16))
def test_raw_scaled_round_trip(key, seed):
    fmt = FORMATS[key]
    raw = torch.randn(2, fmt.channels, 3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 7
    assert torch.allclose(fmt.to_raw(fmt.to_scaled(raw)), raw, atol=1e-12)


def test_scaled_units_by_hand():
    assert SDXL.to_scaled(torch.tensor(1.0)).item() == pytest.approx(0.13025)
    assert FLUX.to_scaled(torch.tensor(1.0)).item() == pytest.approx((1 - 0.1159) * 0.3611)


def test_sd15_preview_of_a_unit_scaled_channel_is_comfyui_row():
    raw = torch.zeros(1, 4, 1, 1)
    raw[0, 0] = 1 / 0.18215  # scaled value 1 in channel 0
    rgb = linear_rgb(raw, SD15.rgb_affine(), clamp=False)[0, :, 0, 0]
    expected = (torch.tensor([0.3512, 0.2297, 0.3227]) + 1) / 2
    assert torch.allclose(rgb, expected, atol=1e-6)


def test_sdxl_bias_enters_the_preview():
    rgb = linear_rgb(torch.zeros(1, 4, 1, 1), SDXL.rgb_affine(), clamp=False)[0, :, 0, 0]
    assert torch.allclose(rgb, (torch.tensor([0.1084, -0.0175, -0.0011]) + 1) / 2, atol=1e-6)


def test_blog_weights_match_the_blog_formula_in_0_255():
    scaled = torch.tensor([1.5, -0.5, 2.0, -1.0])
    raw = (scaled / 0.13025).view(1, 4, 1, 1)
    rgb = linear_rgb(raw, SDXL.rgb_affine("blog"), clamp=False)[0, :, 0, 0] * 255
    c0, c1, c2, c3 = scaled.tolist()
    expected = [60 * c0 - 60 * c1 + 25 * c2 - 70 * c3 + 150,
                60 * c0 - 5 * c1 + 15 * c2 - 50 * c3 + 140,
                60 * c0 + 10 * c1 - 5 * c2 - 35 * c3 + 130]
    assert torch.allclose(rgb, torch.tensor(expected), atol=1e-3)


def test_flux_shift_is_removed_before_the_factors():
    raw = torch.full((1, 16, 1, 1), 0.1159)  # scaled zero everywhere
    rgb = linear_rgb(raw, FLUX.rgb_affine(), clamp=False)[0, :, 0, 0]
    assert torch.allclose(rgb, (torch.tensor([-0.0329, -0.0718, -0.0851]) + 1) / 2, atol=1e-6)


def test_four_channels_without_hint_is_ambiguous_and_says_so():
    with pytest.raises(LatentLabInputError, match="ambiguous.*SD1.x/2.x or SDXL"):
        resolve_format("auto", 4)


def test_sixteen_channels_without_hint_names_sd3_and_flux():
    with pytest.raises(LatentLabInputError, match="SD3 or Flux"):
        resolve_format("auto", 16)


def test_hint_and_explicit_choice():
    assert resolve_format("auto", 4, "sdxl") is SDXL
    assert resolve_format("sd15", 4, "sdxl") is SD15
    with pytest.raises(LatentLabInputError, match="16 channels but the SD1.x/2.x format has 4"):
        resolve_format("sd15", 16)
    with pytest.raises(LatentLabInputError, match="No known latent format has 3 channels"):
        resolve_format("auto", 3)


def test_hint_with_wrong_channel_count_is_ignored():
    with pytest.raises(LatentLabInputError, match="ambiguous"):
        resolve_format("auto", 16, "sdxl")


def test_comfy_class_names_map_to_formats():
    assert format_for_comfy_class("SDXL") is SDXL
    assert format_for_comfy_class("SD15") is SD15
    assert format_for_comfy_class("SDXL_Playground_2_5") is None
