"""Every latent-format class of the ComfyUI under test, read by the pack, against that class's own factors and
process_in/process_out (in this process), and video and Flux-type latents from ComfyUI's own empty-latent nodes
through the nodes over HTTP."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import format_reference as ref  # noqa: E402
from latent_lab.adapters.comfy_formats import comfy_format_classes, comfy_formats, same_values  # noqa: E402
from latent_lab.core.formats import FORMATS, measured_format  # noqa: E402
from latent_lab.nodes.common import format_choices  # noqa: E402
from latent_lab.nodes.correct import LatentCenter, LatentColorBalance, LatentMaximize, LatentSoftClamp  # noqa: E402
from latent_lab.nodes.see import LatentChannelMaps, LatentRGBPreview, LatentStats  # noqa: E402


@pytest.fixture(scope="module")
def classes(comfy_inprocess):
    found = comfy_format_classes()
    assert "Wan21" in found and "SDXL" in found
    return found


def with_factors(classes) -> dict:
    return {name: cls() for name, cls in classes.items()
            if getattr(cls(), "latent_rgb_factors", None) is not None and cls.latent_dimensions in (2, 3)}


def test_every_class_with_factors_is_a_format_choice(classes):
    expected = with_factors(classes)
    assert len(expected) >= 16
    assert set(expected) <= set(comfy_formats())
    choices = format_choices()
    assert set(expected) <= set(choices) and {"sd15", "sdxl", "sd3", "flux"} <= set(choices)


def test_builtin_table_equals_comfyuis_values(classes):
    for fmt in FORMATS.values():
        for name in fmt.comfy_classes:
            instance = classes[name]()
            measured = measured_format(name, instance.latent_channels, instance.latent_dimensions,
                                       instance.latent_rgb_factors, getattr(instance, "latent_rgb_factors_bias", None),
                                       instance.process_in, instance.process_out)
            assert same_values(fmt, measured), name
            assert fmt.factor_set().weights == tuple(tuple(row) for row in instance.latent_rgb_factors), name


def class_latent(instance, seed=0):
    dims = (3,) if instance.latent_dimensions == 3 else ()
    scaled = torch.randn((2, instance.latent_channels) + dims + (4, 6), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64) * 1.5
    return {"samples": instance.process_out(scaled).float()}


def test_every_class_previews_maps_reports_and_corrects_in_its_own_units(classes):
    for name, instance in with_factors(classes).items():
        lat = class_latent(instance)
        raw = lat["samples"]
        scaled = instance.process_in(raw.double())
        images = LatentRGBPreview().preview(lat, name, "comfyui", "latent", "nearest")["result"][0]
        assert torch.allclose(images.double(), ref.preview(raw, instance), atol=2e-4), name
        maps = LatentChannelMaps().maps(lat, name, "scaled", "shared", 1)["result"][0]
        assert maps.shape[0] == 2, name
        report = json.loads(LatentStats().stats(lat, name, "scaled", 3.0, "comfyui")["result"][0])
        means = torch.tensor([row["mean"] for row in report["items"][1]["channels"]], dtype=torch.float64)
        assert torch.allclose(means, scaled[1].flatten(1).mean(1), atol=1e-4), name
        assert torch.allclose(torch.tensor(report["color_cast"]["rgb"], dtype=torch.float64),
                              ref.mean_color(raw, instance).clamp(0, 1).mean(0), atol=1e-3), name
        corrected = LatentCenter().center(lat, name, "all", 1.0, 0.0)[0]["samples"]
        assert torch.allclose(instance.process_in(corrected.double()), ref.center(scaled), atol=1e-3), name
        corrected = LatentSoftClamp().clamp(lat, name, 1.0, 2.0, "pixel", 1.0)[0]["samples"]
        assert torch.allclose(instance.process_in(corrected.double()), ref.soft_clamp(scaled, 1.0, 2.0), atol=1e-3), name
        corrected = LatentMaximize().maximize(lat, name, "all", 3.0, 1.0)[0]["samples"]
        chosen = list(range(instance.latent_channels))
        assert torch.allclose(instance.process_in(corrected.double()), ref.maximize(scaled, 3.0, chosen), atol=1e-3), name
        balanced = LatentColorBalance().balance(lat, name, "comfyui", "#808080", "all", 1.0)["result"][0]["samples"]
        colors = ref.mean_color(balanced, instance)
        assert torch.allclose(colors, torch.full_like(colors, 128 / 255), atol=1e-3), name


def test_a_model_carrying_a_video_class_gives_its_format(classes):
    import comfy.model_patcher
    module = torch.nn.Linear(1, 1)
    module.latent_format = classes["Wan21"]()
    patcher = comfy.model_patcher.ModelPatcher(module, torch.device("cpu"), torch.device("cpu"))
    lat = class_latent(module.latent_format)
    report = json.loads(LatentStats().stats(lat, "auto", "scaled", 3.0, "comfyui", patcher)["result"][0])
    assert report["format"] == "Wan21" and report["frame"]["frames"] == 3
    with pytest.raises(ValueError, match="Wan-family.*HunyuanVideo"):
        LatentStats().stats(lat, "auto", "scaled", 3.0, "comfyui")


def small_wan_model():
    """A ModelPatcher around a random-weight Wan 2.1 text-to-video model built with ComfyUI's own classes, tiny
    (one block, width 64) so a CPU samples a video latent in a second."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from random_models import random_init_
    config = comfy.supported_models.WAN21_T2V({
        "image_model": "wan2.1", "model_type": "t2v", "dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 1,
        "text_dim": 32, "freq_dim": 32, "in_dim": 16, "out_dim": 16, "patch_size": (1, 2, 2)})
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    random_init_(base.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def test_video_sampling_is_corrected_and_recorded_through_the_nodes(classes):
    import comfy.sample
    from latent_lab.nodes.correct import LatentCorrection, LatentTrajectory, LatentTrajectoryRecorder
    model = small_wan_model()
    generator = torch.Generator().manual_seed(0)
    cond, uncond = [[torch.randn(1, 8, 32, generator=generator), {}]], [[torch.randn(1, 8, 32, generator=generator), {}]]
    noise = torch.randn(1, 16, 3, 4, 4, generator=generator)

    def sample(patched):
        return comfy.sample.sample(patched, noise, 3, 4.0, "euler", "simple", cond, uncond, torch.zeros_like(noise),
                                   disable_pbar=True, seed=1)
    schedule = "center 0-100% channels=all global=0"
    corrected = LatentCorrection().patch(model, "custom", 1.0, "run", schedule, "auto")
    assert corrected["ui"]["text"][0].startswith("Wan21")
    recorder, record = LatentTrajectoryRecorder().record(corrected["result"][0], 16, "run", "auto")
    out, plain = sample(recorder), sample(model)
    wan = classes["Wan21"]()
    assert wan.process_in(out.double()).mean(dim=(2, 3, 4)).abs().max() < 1e-4   # the last x0 was centered
    assert wan.process_in(plain.double()).mean(dim=(2, 3, 4)).abs().max() > 1e-3
    run, matched = record.find_run(out)
    assert matched and len(run.frames) == 3 and run.frames[0].stats.shape == (1, 16, 4)
    assert run.frames[-1].preview.shape == (1, 4, 4, 3)
    strip, plot, report = LatentTrajectory().view(record, {"samples": out}, 3, 64, 0.0)["result"]
    assert strip.shape[0] == 1 and plot.shape[0] == 1 and json.loads(report)["matched_latent"]


# ---------------------------------------------------------------------------------------------- over HTTP

def test_wan_and_flux_type_latents_from_comfyuis_empty_latent_nodes(comfy_server):
    served = comfy_server.object_info()["LatentLabRGBPreview"]["input"]
    assert {"Wan21", "HunyuanVideo", "flux"} <= set(served["required"]["format"][0])
    assert set(served["optional"]) >= {"frame_stride", "frame_limit"}
    prompt = {
        "video": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": 64, "height": 48, "length": 9, "batch_size": 2}},
        "image": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "preview": {"class_type": "LatentLabRGBPreview", "inputs": {
            "latent": ["video", 0], "format": "Wan21", "factors": "comfyui", "size": "latent", "resample": "nearest",
            "frame_stride": 1, "frame_limit": 0}},
        "center": {"class_type": "LatentLabCenter", "inputs": {
            "latent": ["video", 0], "format": "Wan21", "channels": "all", "channel_strength": 1.0,
            "global_strength": 0.0}},
        "stats": {"class_type": "LatentLabStats", "inputs": {
            "latent": ["center", 0], "format": "auto", "units": "scaled", "sigma_k": 3.0, "factors": "comfyui",
            "frame": 2}},
        "maps": {"class_type": "LatentLabChannelMaps", "inputs": {
            "latent": ["video", 0], "format": "HunyuanVideo", "units": "scaled", "scale": "shared", "tile_scale": 2,
            "frame": 1}},
        "flux_preview": {"class_type": "LatentLabRGBPreview", "inputs": {
            "latent": ["image", 0], "format": "Flux", "factors": "comfyui", "size": "x8", "resample": "nearest"}},
        "flux_stats": {"class_type": "LatentLabStats", "inputs": {
            "latent": ["image", 0], "format": "flux", "units": "scaled", "sigma_k": 3.0, "factors": "comfyui"}},
    }
    outputs = comfy_server.run(prompt, timeout=300)
    assert len(outputs["preview"]["images"]) == 2 * 3   # 9 frames -> 3 latent frames, per item
    text = outputs["stats"]["text"][0]
    assert text.startswith("Wan21 · scaled units · shape [2, 16, 3, 6, 8]") and "frame 2 of 3" in text
    assert len(outputs["maps"]["images"]) == 2
    assert len(outputs["flux_preview"]["images"]) == 1
    assert outputs["flux_stats"]["text"][0].startswith("flux")
    ambiguous = {"video": prompt["video"], "stats": {"class_type": "LatentLabStats", "inputs": {
        "latent": ["video", 0], "format": "auto", "units": "scaled", "sigma_k": 3.0, "factors": "comfyui"}}}
    with pytest.raises(comfy_server.PromptError) as failed:
        comfy_server.run(ambiguous, timeout=60)
    assert "Latent Stats" in str(failed.value) and "Wan-family" in str(failed.value) \
        and "HunyuanVideo" in str(failed.value)


def test_docs_class_table_is_that_of_the_comfyui_under_test(classes):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
    import make_format_table
    with open(make_format_table.SEE_DOC, encoding="utf-8") as handle:
        text = handle.read()
    table = make_format_table.comfy_table(comfy_formats())
    assert make_format_table.replaced(text, make_format_table.COMFY_MARKERS, table) == text, \
        "docs/see.md's class table is stale: run tools/make_format_table.py with COMFYUI_PATH"
    assert "| `Wan21` | 16 | video [B,C,T,H,W] | per channel (mean and std) |" in text
