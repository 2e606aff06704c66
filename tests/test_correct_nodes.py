"""The Correct nodes: LATENT corrections, Latent Correction (MODEL -> MODEL) and the trajectory pair."""
import json
import re

import pytest
import torch

import correct_doubles as comfy
import correct_reference as ref
from latent_lab.adapters.correction_patch import CorrectionPatch, TrajectoryPatch
from latent_lab.core import correct_ops as ops, correct_schedule as schedules
from latent_lab.core.formats import FORMATS, LATENT_FORMAT_KEY, SDXL
from latent_lab.nodes import correct as nodes
from latent_lab.nodes.common import LatentLabError


def sdxl_latent(batch=2, seed=0, **extra):
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, 4, 8, 8, generator=generator) * 40 + torch.tensor([8.0, -5.0, 3.0, 1.0]).view(1, 4, 1, 1)
    return {"samples": raw, **extra}


def scaled(latent, fmt=SDXL):
    return fmt.to_scaled(latent["samples"])


def test_center_node_zeroes_channel_means_and_keeps_other_keys():
    latent = sdxl_latent(batch_index=[3, 4])
    before = latent["samples"].clone()
    (out,) = nodes.LatentCenter().center(latent, "sdxl", "auto", 1.0, 1.0)
    assert scaled(out).mean(dim=(2, 3)).abs().max() < 1e-4
    assert out["batch_index"] == [3, 4] and out[LATENT_FORMAT_KEY] == "sdxl"
    assert torch.equal(latent["samples"], before) and "samples" in latent


def test_center_node_per_channel_strength_syntax():
    latent = sdxl_latent()
    (out,) = nodes.LatentCenter().center(latent, "sdxl", "luminance:0.5, 2", 1.0, 0.0)
    means_in, means_out = scaled(latent).mean(dim=(2, 3)), scaled(out).mean(dim=(2, 3))
    torch.testing.assert_close(means_out, means_in * torch.tensor([0.5, 1.0, 0.0, 1.0]), atol=1e-4, rtol=1e-4)


def test_soft_clamp_node_bounds_scaled_values_and_keeps_small_ones_bit_exact():
    latent = sdxl_latent()
    (out,) = nodes.LatentSoftClamp().clamp(latent, "sdxl", 3.5, 4.0, "pixel", 1.0)
    assert scaled(out).abs().max() <= 4.0 + 1e-4
    small = scaled(latent).abs() <= 3.5
    assert torch.equal(out["samples"][small], latent["samples"][small])


def test_soft_clamp_node_strength_zero_returns_the_same_values():
    latent = sdxl_latent()
    (out,) = nodes.LatentSoftClamp().clamp(latent, "sdxl", 3.5, 4.0, "channel", 0.0)
    assert torch.equal(out["samples"], latent["samples"])


def test_maximize_node_reaches_the_boundary_in_scaled_units():
    latent = sdxl_latent()
    (out,) = nodes.LatentMaximize().maximize(latent, "sdxl", "auto", 4.0, 1.0)
    peaks = scaled(out)[:, :3].abs().amax(dim=(1, 2, 3))
    torch.testing.assert_close(peaks, torch.full((2,), 4.0))
    assert torch.equal(out["samples"][:, 3], latent["samples"][:, 3])


def test_color_balance_node_moves_the_preview_mean_to_the_target():
    latent = sdxl_latent()
    result = nodes.LatentColorBalance().balance(latent, "sdxl", "comfyui", "#708090", "auto", 1.0)
    out = result["result"][0]
    colors = ref.mean_color(out["samples"], SDXL.rgb_affine())
    assert (colors - ops.parse_color("#708090")).abs().max() < 1e-3
    assert "-> #708090" in result["ui"]["text"][0]


def test_color_balance_node_half_strength_goes_half_way():
    latent = sdxl_latent()
    out = nodes.LatentColorBalance().balance(latent, "sdxl", "comfyui", "neutral", "all", 0.5)["result"][0]
    before = ref.mean_color(latent["samples"], SDXL.rgb_affine())
    after = ref.mean_color(out["samples"], SDXL.rgb_affine())
    gray = ref.neutral_of(before)
    torch.testing.assert_close(after, (before + gray) / 2, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("call", [
    lambda l: nodes.LatentCenter().center(l, "sdxl", "auto", 1.0, 1.0),
    lambda l: nodes.LatentSoftClamp().clamp(l, "sdxl", 3.5, 4.0, "pixel", 1.0),
    lambda l: nodes.LatentMaximize().maximize(l, "sdxl", "auto", 4.0, 1.0),
    lambda l: nodes.LatentColorBalance().balance(l, "sdxl", "comfyui", "neutral", "auto", 1.0),
])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 1, 2, 3), (1, 3, 0, 0)])  # channel 3: one maximize 'auto' leaves alone
def test_nan_latents_are_refused_with_the_node_name(call, bad, where):
    latent = sdxl_latent()
    latent["samples"][where] = bad
    with pytest.raises(LatentLabError, match=r"Latent Lab · Latent .*1 NaN or infinite"):
        call(latent)


@pytest.mark.parametrize("call", [
    lambda l: nodes.LatentCenter().center(l, "sdxl", "auto", 1.0, 1.0),
    lambda l: nodes.LatentMaximize().maximize(l, "sdxl", "auto", 4.0, 1.0),
    lambda l: nodes.LatentColorBalance().balance(l, "sdxl", "comfyui", "neutral", "auto", 1.0),
])
def test_huge_finite_latents_whose_sums_overflow_are_not_called_nan(call):
    latent = sdxl_latent()
    latent["samples"][:, :, :2] = 3e38  # every channel's sum overflows float32; no value is NaN or inf
    call(latent)


def test_color_balance_report_of_an_item_whose_float32_sums_overflow_shows_colors():
    latent = sdxl_latent()
    latent["samples"][:1, :, :2] = 3e38  # item 0's float32 channel sums overflow; item 1 is ordinary
    result = nodes.LatentColorBalance().balance(latent, "sdxl", "comfyui", "#808080", "auto", 1.0)
    first, second = result["ui"]["text"][0].splitlines()
    assert re.fullmatch(r"item 0: mean color #[0-9a-f]{6} -> #[0-9a-f]{6}", first)
    assert re.fullmatch(r"item 1: mean color #[0-9a-f]{6} -> #808080", second)
    assert torch.isfinite(result["result"][0]["samples"]).all()


@pytest.mark.parametrize("key", ["sd3", "flux"])
def test_16_channel_latents_need_an_explicit_channel_choice(key):
    latent = {"samples": torch.randn(1, 16, 4, 4)}
    with pytest.raises(LatentLabError, match="explicitly"):
        nodes.LatentCenter().center(latent, key, "auto", 1.0, 1.0)
    with pytest.raises(LatentLabError, match="explicitly"):
        nodes.LatentMaximize().maximize(latent, key, "auto", 4.0, 1.0)
    (out,) = nodes.LatentCenter().center(latent, key, "all", 1.0, 0.0)
    assert FORMATS[key].to_scaled(out["samples"]).mean(dim=(2, 3)).abs().max() < 1e-4


def test_16_channel_latent_with_auto_format_is_ambiguous():
    with pytest.raises(LatentLabError, match="ambiguous"):
        nodes.LatentSoftClamp().clamp({"samples": torch.randn(1, 16, 4, 4)}, "auto", 3.5, 4.0, "pixel", 1.0)


@pytest.mark.parametrize("channels, words", [("5", "does not exist"), ("blue", "Unknown channel"), ("0-9", "does not exist")])
def test_unknown_channels_are_refused(channels, words):
    with pytest.raises(LatentLabError, match=words):
        nodes.LatentMaximize().maximize(sdxl_latent(), "sdxl", channels, 4.0, 1.0)


def test_threshold_above_boundary_is_refused():
    with pytest.raises(LatentLabError, match="threshold"):
        nodes.LatentSoftClamp().clamp(sdxl_latent(), "sdxl", 4.5, 4.0, "pixel", 1.0)


@pytest.mark.parametrize("call, match", [
    (lambda l: nodes.LatentMaximize().maximize(l, "sdxl", "0:0", 4.0, 1.0), "Latent Maximize: No channels chosen"),
    (lambda l: nodes.LatentColorBalance().balance(l, "sdxl", "comfyui", "neutral", "1:0", 1.0),
     "Latent Color Balance: No channels chosen"),
    (lambda l: nodes.LatentColorBalance().balance(l, "sdxl", "comfyui", "grey", "auto", 1.0),
     "Latent Color Balance: Target color 'grey' is not understood"),
    (lambda l: nodes.LatentCenter().center(l, "sdxl", "auto", float("nan"), 1.0), "Latent Center: .*outside 0..1"),
    (lambda l: nodes.LatentSoftClamp().clamp(l, "sdxl", 3.5, 4.0, "pixel", float("nan")),
     "Latent Soft Clamp: The strength nan is outside 0..1"),
])
def test_bad_choices_are_refused_with_the_node_name(call, match):
    latent = sdxl_latent()
    before = latent["samples"].clone()
    with pytest.raises(LatentLabError, match=f"Latent Lab · {match}"):
        call(latent)
    assert torch.equal(latent["samples"], before)


def test_not_a_latent_is_refused():
    with pytest.raises(LatentLabError, match="not a ComfyUI latent"):
        nodes.LatentCenter().center(torch.zeros(1, 4, 2, 2), "sdxl", "auto", 1.0, 1.0)


# ------------------------------------------------------------------------------------------------ Latent Correction

def test_correction_node_patches_a_clone_with_the_preset():
    model = comfy.ModelPatcher(comfy.SDXL)
    result = nodes.LatentCorrection().patch(model, "blog", 0.7, "run", "", "auto")
    patched = result["result"][0]
    assert patched is not model and "sampler_post_cfg_function" not in model.model_options
    (fn,) = patched.model_options["sampler_post_cfg_function"]
    assert isinstance(fn, CorrectionPatch) and fn.strength == 0.7
    assert [s.op.kind for s in fn.steps] == ["soft_clamp", "center", "center", "maximize"]
    assert "SDXL" in result["ui"]["text"][0] and "maximize" in result["ui"]["text"][0]


def test_correction_node_custom_schedule_and_its_errors():
    model = comfy.ModelPatcher(comfy.SD15)
    patched = nodes.LatentCorrection().patch(model, "custom", 1.0, "model", "center 0-50 channels=0,1", "auto")["result"][0]
    (fn,) = patched.model_options["sampler_post_cfg_function"]
    assert fn.clock.timeline == "model" and fn.steps[0].op.option("channels") == "0,1"
    with pytest.raises(LatentLabError, match=r"Latent Lab · Latent Correction: Schedule line 1 .*ends earlier"):
        nodes.LatentCorrection().patch(model, "custom", 1.0, "run", "center 50-10", "auto")
    with pytest.raises(LatentLabError, match="Unknown channel"):
        nodes.LatentCorrection().patch(model, "custom", 1.0, "run", "maximize 0-10 channels=alpha", "auto")


def test_correction_node_on_a_16_channel_model():
    model = comfy.ModelPatcher(comfy.Flux)
    with pytest.raises(LatentLabError, match="explicitly"):
        nodes.LatentCorrection().patch(model, "blog", 1.0, "run", "", "auto")
    patched = nodes.LatentCorrection().patch(model, "custom", 1.0, "run", "center 0-100 channels=all", "auto")["result"][0]
    assert len(patched.model_options["sampler_post_cfg_function"]) == 1


def test_correction_node_on_an_unknown_4_channel_model_asks_for_the_format():
    class Unknown:
        latent_channels = 4
    with pytest.raises(LatentLabError, match="ambiguous"):
        nodes.LatentCorrection().patch(comfy.ModelPatcher(Unknown), "blog", 1.0, "run", "", "auto")
    nodes.LatentCorrection().patch(comfy.ModelPatcher(Unknown), "blog", 1.0, "run", "", "sd15")


@pytest.mark.parametrize("model, preset, strength, timeline, match", [
    ("not a model", "blog", 1.0, "run", "not a ComfyUI MODEL"),
    (None, "gentle", 1.0, "run", "Unknown preset 'gentle'"),
    (None, "blog", 1.0, "steps", "Unknown timeline 'steps'"),
    (None, "blog", float("nan"), "run", "strength nan is outside 0..1"),
])
def test_correction_node_refuses_bad_inputs_with_its_name(model, preset, strength, timeline, match):
    model = comfy.ModelPatcher(comfy.SDXL) if model is None else model
    with pytest.raises(LatentLabError, match=f"Latent Lab · Latent Correction: .*{match}"):
        nodes.LatentCorrection().patch(model, preset, strength, timeline, "", "auto")


def test_default_schedule_text_is_the_blog_preset():
    default = nodes.LatentCorrection.INPUT_TYPES()["required"]["schedule"][1]["default"]
    assert schedules.parse_schedule(default) == schedules.blog_schedule()


# ------------------------------------------------------------------------------------------------ trajectory nodes

def test_recorder_and_viewer_nodes_show_the_run_that_made_the_latent():
    model, record = nodes.LatentTrajectoryRecorder().record(comfy.ModelPatcher(comfy.SDXL), 16, "run", "auto")
    assert any(isinstance(f, TrajectoryPatch) for f in model.model_options["sampler_post_cfg_function"])
    sigmas = comfy.ModelSampling().normal_sigmas(5)
    first = comfy.sample(model, torch.randn(2, 4, 8, 8), sigmas)
    comfy.sample(model, torch.randn(2, 4, 8, 8), sigmas)
    result = nodes.LatentTrajectory().view(record, {"samples": first}, 4, 64, 4.0)
    strip, plot, report = result["result"]
    report = json.loads(report)
    assert strip.shape[0] == 2 and plot.shape[0] == 2
    assert report["matched_latent"] and report["calls"] == 5 and report["items"][0]["channels"][0]["name"] == "luminance"
    assert "5 model calls" in result["ui"]["text"][0]


def test_viewer_without_a_recorded_run_says_how_to_wire_it():
    _, record = nodes.LatentTrajectoryRecorder().record(comfy.ModelPatcher(comfy.SD15), 16, "run", "auto")
    with pytest.raises(LatentLabError, match="Nothing was recorded") as info:
        nodes.LatentTrajectory().view(record, {"samples": torch.zeros(1, 4, 8, 8)}, 8, 128, 4.0)
    assert "Connect the recorder's MODEL output" in str(info.value)
    with pytest.raises(LatentLabError, match="not a Latent Lab trajectory"):
        nodes.LatentTrajectory().view("nope", {"samples": torch.zeros(1, 4, 8, 8)}, 8, 128, 4.0)


def test_nodes_are_in_the_correct_category():
    for cls, _ in nodes.NODES.values():
        assert cls.CATEGORY == "Latent Lab/Correct"
