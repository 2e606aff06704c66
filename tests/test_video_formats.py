"""Formats read from ComfyUI-style classes (per-channel units, factor reshapes, video dimensions) and video latents
[B, C, T, H, W] through the See and Correct nodes, compared with direct computations (format_reference)."""
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import format_reference as ref
from latent_lab.adapters.comfy_formats import format_of_instance, model_format, same_values
from latent_lab.core import correct_ops as ops
from latent_lab.core import preview, stats
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import FLUX, FORMATS, LATENT_FORMAT_KEY, measured_units, resolve_format
from latent_lab.nodes.correct import LatentCenter, LatentColorBalance, LatentMaximize, LatentSoftClamp
from latent_lab.nodes.see import LatentChannelMaps, LatentRGBPreview, LatentStats


class FakeModelPatcher:
    """ComfyUI's ModelPatcher as far as the nodes read it: get_model_object('latent_format')."""

    def __init__(self, latent_format):
        self.latent_format = latent_format

    def get_model_object(self, name):
        assert name == "latent_format"
        return self.latent_format


def random_raw(fmt_class, batch=2, frames=3, side=(4, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, fmt_class.latent_channels) + ((frames,) if fmt_class.latent_dimensions == 3 else ()) + side
    scaled = torch.randn(shape, generator=generator, dtype=torch.float64) * 1.5
    return fmt_class.process_out(scaled).float()


formats = st.builds(
    lambda channels, dimensions, per_channel, spread, seed, bias: ref.ComfyStyleFormat(
        channels if spread == 1 else 4 * max(1, channels // 4), dimensions, seed, per_channel, spread, bias),
    st.integers(3, 128), st.sampled_from([2, 3]), st.booleans(), st.sampled_from([1, 1, 2]),
    st.integers(0, 2**16), st.booleans(),
).filter(lambda f: f.latent_rgb_factors_reshape is None or f.latent_dimensions == 2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(comfy_class=formats, seed=st.integers(0, 2**16))
def test_random_formats_preview_and_units_match_their_class(comfy_class, seed):
    fmt = format_of_instance(comfy_class)
    raw = random_raw(comfy_class, seed=seed)
    assert (fmt.channels, fmt.dimensions) == (comfy_class.latent_channels, comfy_class.latent_dimensions)
    scaled = fmt.to_scaled(raw.double())
    assert torch.allclose(scaled, comfy_class.process_in(raw.double()), atol=1e-5)
    assert torch.allclose(fmt.to_raw(scaled), raw.double(), atol=1e-5)
    images = preview.preview_images(raw, fmt.rgb_affine())
    expected = ref.preview(raw, comfy_class)
    assert images.shape == expected.shape
    assert torch.allclose(images.double(), expected, atol=1e-4)
    assert torch.allclose(preview.mean_color(raw, fmt.rgb_affine()).double(), ref.mean_color(raw, comfy_class),
                          atol=1e-4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(comfy_class=formats, seed=st.integers(0, 2**16))
def test_random_formats_corrections_act_in_the_formats_own_units(comfy_class, seed):
    fmt = format_of_instance(comfy_class)
    raw = random_raw(comfy_class, seed=seed)
    scaled = comfy_class.process_in(raw.double())
    count = fmt.channels
    centered = ops.center(raw, [1.0] * count, 0.0, fmt.shift, scale=fmt.scale)
    assert torch.allclose(comfy_class.process_in(centered.double()), ref.center(scaled), atol=1e-4)
    clamped = ops.soft_clamp(raw, 1.0, 2.0, "pixel", scale=fmt.scale, shift=fmt.shift)
    assert torch.allclose(comfy_class.process_in(clamped.double()), ref.soft_clamp(scaled, 1.0, 2.0), atol=1e-4)
    chosen = list(range(0, count, 2))
    maximized = ops.maximize(raw, 3.0, chosen, 1.0, fmt.scale, fmt.shift)
    assert torch.allclose(comfy_class.process_in(maximized.double()), ref.maximize(scaled, 3.0, chosen), atol=1e-4)
    target = torch.tensor([0.4, 0.5, 0.6])
    balanced = ops.color_balance(raw, fmt.rgb_affine(), target, list(range(count)))
    if torch.linalg.matrix_rank(torch.tensor(comfy_class.latent_rgb_factors)) == 3:  # exact only when rows span RGB
        assert torch.allclose(ref.mean_color(balanced, comfy_class).float(), target.expand(raw.shape[0], 3), atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(channels=st.integers(3, 128), dimensions=st.sampled_from([2, 3]), seed=st.integers(0, 2**16))
def test_stats_in_scaled_units_are_the_stats_of_process_in(channels, dimensions, seed):
    comfy_class = ref.ComfyStyleFormat(channels, dimensions, seed)
    fmt = format_of_instance(comfy_class)
    raw = random_raw(comfy_class, batch=1, seed=seed)
    report = stats.stats_report(fmt.to_scaled(raw.double()), list(fmt.channel_names), 3.0)
    direct = comfy_class.process_in(raw.double()).flatten(2)[0]
    means = torch.tensor([row["mean"] for row in report["items"][0]["channels"]], dtype=torch.float64)
    stds = torch.tensor([row["std"] for row in report["items"][0]["channels"]], dtype=torch.float64)
    assert torch.allclose(means, direct.mean(1), atol=1e-6)
    assert torch.allclose(stds, direct.std(1, correction=0), atol=1e-6)


def test_uniform_units_come_out_as_numbers_and_per_channel_as_tuples():
    uniform = format_of_instance(ref.ComfyStyleFormat(8, 2, per_channel=False))
    assert uniform.uniform and uniform.scale == pytest.approx(0.25) and uniform.shift == pytest.approx(0.25)
    per_channel = format_of_instance(ref.ComfyStyleFormat(8, 3))
    assert not per_channel.uniform and len(per_channel.scale) == 8 and len(per_channel.shift) == 8


class Squared(ref.ComfyStyleFormat):
    def process_in(self, latent):
        return latent * latent.abs()


class Mixing(ref.ComfyStyleFormat):
    def process_in(self, latent):
        return latent + latent.mean(dim=1, keepdim=True)


class NoInverse(ref.ComfyStyleFormat):
    def process_out(self, latent):
        return latent


class FramePacking(ref.ComfyStyleFormat):
    """Like ComfyUI 0.38's HunyuanImage21Refiner: process_in repeats the first frame and packs frame pairs."""
    def process_in(self, latent):
        return torch.cat((latent[:, :, :1], latent), dim=2)


@pytest.mark.parametrize("cls", [Squared, Mixing, NoInverse, FramePacking])
def test_conversions_that_are_not_a_scale_and_shift_per_channel_are_refused(cls):
    with pytest.raises(LatentLabInputError, match="not a scale and shift per channel|does not keep each channel"):
        format_of_instance(cls(6, 3))


def test_measured_units_of_flux_shift_and_scale():
    scale, shift = measured_units(lambda x: (x - 0.1159) * 0.3611, lambda x: x / 0.3611 + 0.1159, 16, 2, "Flux")
    assert scale == pytest.approx(FLUX.scale, rel=1e-12) and shift == pytest.approx(FLUX.shift, rel=1e-9)


def test_factor_rows_that_do_not_fit_the_channels_name_the_fit_node():
    comfy_class = ref.ComfyStyleFormat(8, 2)
    comfy_class.latent_rgb_factors = comfy_class.latent_rgb_factors[:5]
    with pytest.raises(LatentLabInputError, match="Fit Latent RGB Factors"):
        format_of_instance(comfy_class)


def test_a_reshape_spreads_128_channels_over_2x2_subpixels_like_flux2():
    comfy_class = ref.ComfyStyleFormat(128, 2, spread=2)
    fmt = format_of_instance(comfy_class)
    raw = random_raw(comfy_class, batch=1, side=(3, 4))
    images = preview.preview_images(raw, fmt.rgb_affine())
    assert images.shape == (1, 6, 8, 3)
    assert torch.allclose(images.double(), ref.preview(raw, comfy_class), atol=1e-5)
    assert preview.preview_images(raw, fmt.rgb_affine(), 8).shape == (1, 48, 64, 3)


def test_a_class_without_factors_gives_units_and_a_message_naming_the_fit_node():
    comfy_class = ref.ComfyStyleFormat(16, 3)
    comfy_class.latent_rgb_factors = None
    model = FakeModelPatcher(comfy_class)
    lat = {"samples": random_raw(ref.ComfyStyleFormat(16, 3))}
    with pytest.raises(LatentLabInputError, match="Latent RGB Preview: .*no linear RGB factors.*Fit Latent RGB Factors"):
        LatentRGBPreview().preview(lat, "auto", "comfyui", "latent", "nearest", model)
    report = json.loads(LatentStats().stats(lat, "auto", "scaled", 3.0, "comfyui", model)["result"][0])
    assert "color_cast" not in report and report["format"] == "ComfyStyleFormat"
    maps = LatentChannelMaps().maps(lat, "auto", "scaled", "shared", 1, model)
    assert maps["result"][0].shape[0] == 2


# ---------------------------------------------------------------------------------------------- video nodes

WAN_LIKE = ref.ComfyStyleFormat(16, 3, seed=5)


def video_latent(batch=2, frames=4, seed=0, **extra):
    return {"samples": random_raw(WAN_LIKE, batch, frames, (4, 6), seed), **extra}


def test_video_preview_gives_every_frame_of_every_item_item_major():
    lat = video_latent()
    model = FakeModelPatcher(WAN_LIKE)
    images = LatentRGBPreview().preview(lat, "auto", "comfyui", "x8", "nearest", model)["result"][0]
    assert images.shape == (8, 32, 48, 3)
    expected = ref.preview(lat["samples"], WAN_LIKE).repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert torch.allclose(images.double(), expected, atol=1e-4)
    strided = LatentRGBPreview().preview(lat, "auto", "comfyui", "latent", "nearest", model, 2, 1)["result"][0]
    frames = ref.preview(lat["samples"], WAN_LIKE)
    assert torch.allclose(strided.double(), frames[[0, 4]], atol=1e-4)


def test_image_latents_keep_one_preview_per_item_whatever_the_frame_inputs():
    lat = {"samples": torch.randn(3, 4, 5, 5)}
    plain = LatentRGBPreview().preview(lat, "sdxl", "comfyui", "latent", "nearest")["result"][0]
    framed = LatentRGBPreview().preview(lat, "sdxl", "comfyui", "latent", "nearest", None, 3, 1)["result"][0]
    assert torch.equal(plain, framed) and plain.shape[0] == 3


def test_sixteen_channel_video_without_a_hint_names_wan_and_hunyuanvideo():
    with pytest.raises(LatentLabInputError, match="Latent Stats: .*ambiguous.*Wan-family.*HunyuanVideo"):
        LatentStats().stats(video_latent(), "auto", "scaled", 3.0, "comfyui")
    with pytest.raises(LatentLabInputError, match="Wan-family.*HunyuanVideo"):
        resolve_format("auto", 16, None, FORMATS, 5)


def test_an_image_format_for_a_video_latent_is_refused():
    with pytest.raises(LatentLabInputError, match="Video latents .* need a format of their kind; Flux.1"):
        LatentCenter().center(video_latent(), "flux", "all", 1.0, 1.0)


def test_video_stats_cover_all_frames_and_the_chosen_frame():
    lat = video_latent()
    model = FakeModelPatcher(WAN_LIKE)
    result = LatentStats().stats(lat, "auto", "scaled", 3.0, "comfyui", model, 2)
    report = json.loads(result["result"][0])
    scaled = WAN_LIKE.process_in(lat["samples"].double())
    means = torch.tensor([row["mean"] for row in report["items"][1]["channels"]], dtype=torch.float64)
    assert torch.allclose(means, scaled[1].flatten(1).mean(1), atol=1e-6)
    frame_means = torch.tensor([row["mean"] for row in report["frame"]["items"][1]["channels"]], dtype=torch.float64)
    assert torch.allclose(frame_means, scaled[1, :, 2].flatten(1).mean(1), atol=1e-6)
    assert report["frame"]["index"] == 2 and report["frame"]["frames"] == 4 and report["shape"] == [2, 16, 4, 4, 6]
    colors = torch.tensor(report["color_cast"]["rgb"], dtype=torch.float64)
    assert torch.allclose(colors, ref.mean_color(lat["samples"], WAN_LIKE).clamp(0, 1).mean(0), atol=1e-3)
    with pytest.raises(LatentLabInputError, match="Frame 4 does not exist.*4 frames"):
        LatentStats().stats(lat, "auto", "scaled", 3.0, "comfyui", model, 4)


def test_video_channel_maps_show_the_chosen_frame_with_clip_wide_ranges():
    lat = video_latent(batch=1)
    first = LatentChannelMaps().maps(lat, "auto", "raw", "shared", 2, None, 0)["result"][0]
    last = LatentChannelMaps().maps(lat, "auto", "raw", "shared", 2, None, 3)["result"][0]
    assert first.shape == last.shape and first.shape[0] == 1 and not torch.equal(first, last)


def test_video_corrections_per_item_over_the_clip_in_the_formats_units():
    lat = video_latent()
    model = FakeModelPatcher(WAN_LIKE)
    scaled = WAN_LIKE.process_in(lat["samples"].double())
    centered = LatentCenter().center(lat, "auto", "all", 1.0, 0.0, model)[0]
    assert torch.allclose(WAN_LIKE.process_in(centered["samples"].double()), ref.center(scaled), atol=1e-4)
    assert centered[LATENT_FORMAT_KEY] == "ComfyStyleFormat"
    clamped = LatentSoftClamp().clamp(lat, "auto", 1.0, 2.0, "pixel", 1.0, model)[0]
    assert torch.allclose(WAN_LIKE.process_in(clamped["samples"].double()), ref.soft_clamp(scaled, 1.0, 2.0), atol=1e-4)
    maximized = LatentMaximize().maximize(lat, "auto", "0-3", 3.0, 1.0, model)[0]
    assert torch.allclose(WAN_LIKE.process_in(maximized["samples"].double()),
                          ref.maximize(scaled, 3.0, [0, 1, 2, 3]), atol=1e-4)
    balanced = LatentColorBalance().balance(lat, "auto", "comfyui", "#808080", "all", 1.0, model)["result"][0]
    colors = ref.mean_color(balanced["samples"], WAN_LIKE)
    assert torch.allclose(colors, torch.full_like(colors, 128 / 255), atol=1e-4)


def test_per_frame_corrects_each_frame_as_a_one_frame_clip():
    lat = video_latent(frames=3)
    model = FakeModelPatcher(WAN_LIKE)
    scaled = WAN_LIKE.process_in(lat["samples"].double())
    frames = [scaled[:, :, t:t + 1] for t in range(3)]

    def each(reference):
        return torch.cat([reference(frame) for frame in frames], dim=2)

    centered = LatentCenter().center(lat, "auto", "all", 1.0, 0.0, model, per_frame=True)[0]
    assert torch.allclose(WAN_LIKE.process_in(centered["samples"].double()), each(ref.center), atol=1e-4)
    whole = LatentCenter().center(lat, "auto", "all", 1.0, 0.0, model)[0]
    assert not torch.allclose(whole["samples"], centered["samples"], atol=1e-3)  # the option changes something
    clamped = LatentSoftClamp().clamp(lat, "auto", 1.0, 2.0, "channel", 1.0, model, per_frame=True)[0]
    assert torch.allclose(WAN_LIKE.process_in(clamped["samples"].double()),
                          each(lambda x: ref.soft_clamp(x, 1.0, 2.0, mode="channel")), atol=1e-4)
    maximized = LatentMaximize().maximize(lat, "auto", "0-3", 3.0, 1.0, model, per_frame=True)[0]
    assert torch.allclose(WAN_LIKE.process_in(maximized["samples"].double()),
                          each(lambda x: ref.maximize(x, 3.0, [0, 1, 2, 3])), atol=1e-4)
    out = LatentColorBalance().balance(lat, "auto", "comfyui", "#808080", "all", 1.0, model, per_frame=True)
    balanced = out["result"][0]["samples"]
    for t in range(3):
        colors = ref.mean_color(balanced[:, :, t:t + 1], WAN_LIKE)
        assert torch.allclose(colors, torch.full_like(colors, 128 / 255), atol=1e-4)
    assert "item 1 frame 2" in out["ui"]["text"][0]
    assert lat["samples"].shape == balanced.shape and torch.equal(lat["samples"], video_latent(frames=3)["samples"])


def test_per_frame_leaves_image_latents_as_without_it():
    latent = {"samples": torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(3))}
    plain = LatentCenter().center(latent, "sdxl", "all", 1.0, 0.5)[0]["samples"]
    assert torch.equal(LatentCenter().center(latent, "sdxl", "all", 1.0, 0.5, per_frame=True)[0]["samples"], plain)


def test_auto_channels_on_a_format_without_readings_say_what_to_set():
    with pytest.raises(LatentLabInputError, match="no known meanings.*Set channels explicitly"):
        LatentMaximize().maximize(video_latent(), "auto", "auto", 3.0, 1.0, FakeModelPatcher(WAN_LIKE))


def flux_like(scale: float):
    """A class named Flux with Flux.1's factors and the given scale."""
    def process_in(self, latent):
        return (latent - 0.1159) * scale

    def process_out(self, latent):
        return latent / scale + 0.1159
    factors = FLUX.factor_set()
    return type("Flux", (), {"latent_channels": 16, "latent_rgb_factors": [list(r) for r in factors.weights],
                             "latent_rgb_factors_bias": list(factors.bias), "process_in": process_in,
                             "process_out": process_out})()


def test_a_class_with_builtin_values_is_the_builtin_format_and_one_that_differs_is_not():
    assert format_of_instance(flux_like(0.3611)) is FLUX
    other = format_of_instance(flux_like(0.5))
    assert other is not FLUX and not same_values(other, FLUX) and other.scale == pytest.approx(0.5)
    assert model_format(FakeModelPatcher(WAN_LIKE)).dimensions == 3
    assert model_format(None) is None


# ---------------------------------------------------------------------------------------------- during sampling

def test_correction_patch_and_trajectory_work_on_video_predictions():
    import correct_doubles as comfy
    from latent_lab.adapters import correction_patch as patch
    from latent_lab.core import correct_schedule as schedules, trajectory

    fmt = format_of_instance(WAN_LIKE)
    schedule = schedules.parse_schedule("center 0-100% channels=all global=0\nsoft_clamp 0-100% threshold=1 boundary=2")
    x0 = torch.randn(2, 16, 5, 4, 6, generator=torch.Generator().manual_seed(3)) * 2   # scaled, as samplers hold it
    sigmas = torch.tensor([14.6, 6.0, 0.0])
    args = comfy.post_cfg_args(comfy.ModelPatcher(), x0, x0 + 0.1, x0 - 0.1, 5.0, sigmas[0].expand(2), x0 * 3,
                               {"transformer_options": {"sample_sigmas": sigmas}})
    corrected = patch.CorrectionPatch(schedules.compile_schedule(schedule, fmt))(args)
    assert torch.allclose(corrected.double(), ref.soft_clamp(ref.center(x0.double()), 1.0, 2.0), atol=1e-5)
    record = trajectory.Trajectory(ops.scaled_affine(fmt.rgb_affine(), fmt), fmt.channel_names, 64)
    patch.TrajectoryPatch(record)(args)
    frame = record.runs[-1].frames[0]
    assert frame.stats.shape == (2, 16, 4)
    torch.testing.assert_close(frame.stats[..., 0], x0.flatten(2).mean(2))
    middle = ref.preview(WAN_LIKE.process_out(x0[:, :, 2:3].double()), WAN_LIKE)
    assert (frame.preview.double() - (middle * 255).round()).abs().max() <= 1


def test_blog_preset_on_a_format_without_defaults_says_what_to_set():
    from latent_lab.core import correct_schedule as schedules
    fmt = format_of_instance(WAN_LIKE)
    with pytest.raises(LatentLabInputError, match="no known meanings.*Set channels explicitly"):
        schedules.compile_schedule(schedules.blog_schedule(), fmt)
    with pytest.raises(LatentLabInputError, match="no default boundary.*boundary=4"):
        schedules.compile_schedule(schedules.parse_schedule("maximize 90-100% channels=all"), fmt)
    with pytest.raises(LatentLabInputError, match="no default threshold or boundary.*scaled units"):
        schedules.compile_schedule(schedules.parse_schedule("soft_clamp 0-5%"), fmt)
    assert schedules.compile_schedule(schedules.parse_schedule(
        "soft_clamp 0-5% threshold=2 boundary=3\nsoft_clamp 0-5% relative=yes threshold=0.9 boundary=0.99\n"
        "maximize 90-100% channels=all boundary=3"), fmt)
    assert schedules.compile_schedule(schedules.parse_schedule("soft_clamp 0-5%\nmaximize 90-100%"), FORMATS["sdxl"])


def test_readme_format_table_is_what_the_pack_supports():
    import os
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "tools"))
    import make_format_table
    with open(make_format_table.README, encoding="utf-8") as handle:
        text = handle.read()
    assert make_format_table.replaced(text, make_format_table.BUILTIN_MARKERS, make_format_table.builtin_table()) \
        == text, "README's format table is stale: run python3 tools/make_format_table.py"
    assert "| `sdxl` | 4 | 0.13025 | 0 |" in text


def test_a_recorder_on_a_model_whose_format_has_no_factors_names_the_fit_node():
    from latent_lab.nodes.correct import LatentTrajectoryRecorder
    import correct_doubles as comfy
    bare = ref.ComfyStyleFormat(16, 3)
    bare.latent_rgb_factors = None
    model = comfy.ModelPatcher()
    model.latent_format = bare
    with pytest.raises(LatentLabInputError, match="Latent Trajectory Recorder: .*no linear RGB factors.*Fit Latent RGB"):
        LatentTrajectoryRecorder().record(model, 64, "run", "auto")
