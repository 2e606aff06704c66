"""VAE anomaly probe inside real ComfyUI: prompts over HTTP on a random-weight SD VAE, and ComfyUI's VAE class in-process.

The weights are random, so nothing here says whether real SD VAEs have the anomaly: it checks plumbing,
the report's documented keys and the no-tiling, pre-clamp and inference-mode paths on the real classes.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from latent_lab.core import probe as P
from latent_lab.core import probe_report as R

PROBE_DEFAULTS = {"mode": "verify", "threshold": 6.0, "radius": 3, "verify_decodes": 8, "map_passes": 24,
                  "probe_seed": 0, "sweep_sizes": "", "image_index": 0}


def write_image(server, size: int, name: str) -> str:
    rng = np.random.default_rng(size)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.6 * x + 0.2, 0.5 * (1 - y) + 0.1 * x, 0.3 + 0.4 * x * y], -1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1, 3)
        image += rng.uniform(-0.4, 0.4, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.01 + 0.05 * r))[..., None]
    image += rng.normal(0, 0.03, image.shape)
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(os.path.join(server.input_dir, name))
    return name


def write_mask(server, size: int, cell: tuple, name: str) -> str:
    mask = np.zeros((size, size), np.uint8)
    y, x = cell
    mask[8 * y:8 * y + 8, 8 * x:8 * x + 8] = 255
    Image.fromarray(mask).save(os.path.join(server.input_dir, name))
    return name


def probe_prompt(vae_name: str, image_name: str, **options) -> dict:
    return {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "image": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "probe": {"class_type": "LatentLabVAEAnomalyProbe", "inputs": {
            "vae": ["vae", 0], "image": ["image", 0], **{**PROBE_DEFAULTS, **options}}},
    }


def check_report(report: dict, size: int, mode: str) -> None:
    assert set(report) == set(R.REPORT_KEYS)
    assert report["version"] == R.REPORT_VERSION
    assert report["image"]["probed_size"] == [size, size]
    assert report["latent"] == {"shape": [4, size // 8, size // 8], "downscale": 8}
    assert report["vae"]["has_logvar"] is True
    assert report["moments"]["logvar_read"].startswith("before the clamp")
    assert set(report["moments"]["logvar_channel_mean"]) == {"min", "median", "max", "robust_scale"}
    assert {"threshold", "count", "cells"} <= set(report["flags"])
    influence = report["influence"]
    assert influence["mode"] == mode and influence["radius"] == 3
    assert influence["decoder_equivalent_passes"] <= influence["budget"]
    assert influence["cells"] and all(np.isfinite(c["influence"]) for c in influence["cells"])
    assert isinstance(report["verdict"], str) and report["verdict"]


def test_probe_256_verify_and_map_through_a_prompt(comfy_server, random_sd_vae):
    name = write_image(comfy_server, 256, "latentlab_probe_256.png")
    prompt = probe_prompt(random_sd_vae, name, mode="verify", sweep_sizes="128, 192")
    prompt["map"] = {"class_type": "LatentLabVAEAnomalyProbe", "inputs": {
        **prompt["probe"]["inputs"], "mode": "map", "sweep_sizes": ""}}
    prompt["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["map", 4]}}
    outputs = comfy_server.run(prompt, timeout=900)
    for node, mode in (("probe", "verify"), ("map", "map")):
        text = outputs[node]["text"][0]
        assert f"{mode} mode:" in text
        assert len(outputs[node]["images"]) == 3
    history_text = outputs["probe"]["text"][0]
    assert "resolution 128x128" in history_text and "resolution 192x192" in history_text
    assert len(outputs["save"]["images"]) == 1


def test_probe_report_parses_with_documented_keys(comfy_server, random_sd_vae):
    """The node puts its JSON report in its ui output too, so /history carries it."""
    size = 256
    name = write_image(comfy_server, size, "latentlab_probe_256b.png")
    outputs = comfy_server.run(probe_prompt(random_sd_vae, name, verify_decodes=4), timeout=900)
    report = json.loads(outputs["probe"]["report"][0])
    check_report(report, size, "verify")
    assert outputs["probe"]["text"][0].splitlines()[0] == report["verdict"]


def test_probe_512_verify_small_budget(comfy_server, random_sd_vae):
    name = write_image(comfy_server, 512, "latentlab_probe_512.png")
    outputs = comfy_server.run(probe_prompt(random_sd_vae, name, verify_decodes=3), timeout=900)
    text = outputs["probe"]["text"][0]
    assert "verify mode: 3 decoder-equivalent passes" in text and "latent 64x64" in text
    check_report(json.loads(outputs["probe"]["report"][0]), 512, "verify")


def test_repair_then_decode_through_a_prompt(comfy_server, random_sd_vae):
    size = 128
    name = write_image(comfy_server, size, "latentlab_repair_128.png")
    mask_name = write_mask(comfy_server, size, (5, 9), "latentlab_repair_mask_128.png")
    prompt = probe_prompt(random_sd_vae, name, verify_decodes=3)
    prompt.update({
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": mask_name, "channel": "red"}},
        "repair": {"class_type": "LatentLabSpotRepair", "inputs": {
            "latent": ["probe", 0], "method": "harmonic", "radius": 3, "verify_decodes": 3,
            "mask": ["mask", 0], "vae": ["vae", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["repair", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    })
    outputs = comfy_server.run(prompt, timeout=900)
    text = outputs["repair"]["text"][0]
    assert text.startswith("harmonic: 1 cell(s) repaired") and "(5, 9): far-field influence" in text
    result = json.loads(outputs["repair"]["report"][0])
    assert result["cells"] == [[5, 9]] and result["reprobe"]["cells"][0]["after_ratio"] is not None
    assert len(outputs["save"]["images"]) == 1


def test_probe_errors_reach_the_user(comfy_server, random_sd_vae):
    prompt = probe_prompt(random_sd_vae, "unused.png")
    prompt["image"] = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}}
    with pytest.raises(comfy_server.PromptError) as failed:
        comfy_server.run(prompt, timeout=120)
    assert "VAE Anomaly Probe" in str(failed.value) and "needs at least 64x64 px" in str(failed.value)


# ---------------------------------------------------------------- ComfyUI's VAE class in this process

def test_adapter_reads_logvar_before_the_clamp_on_comfyuis_vae(inprocess_sd_vae):
    import comfy.sd
    from latent_lab.adapters.vae_probe import ComfyProbeVAE
    state = {k: v.clone() for k, v in inprocess_sd_vae.get_sd().items()}
    state["quant_conv.bias"][4:] = -45.0  # push the log-variance below ComfyUI's -30 clamp
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=state)
        pixels = torch.rand(1, 64, 64, 3)
        probed = ComfyProbeVAE(vae)
        mean, logvar = probed.encode_moments(pixels.movedim(-1, 1))
        assert float(logvar.max()) < -30
        assert torch.allclose(mean, vae.encode(pixels).to(mean), atol=1e-4)  # ComfyUI returns the same mean
        posterior = vae.first_stage_model.quant_conv(vae.first_stage_model.encoder(pixels.movedim(-1, 1) * 2 - 1))
        from comfy.ldm.modules.distributions.distributions import DiagonalGaussianDistribution
        assert float(DiagonalGaussianDistribution(posterior).logvar.min()) == -30.0


def test_map_mode_runs_under_inference_mode_on_comfyuis_decoder(inprocess_sd_vae):
    from latent_lab.adapters.vae_probe import probe_vae
    with torch.inference_mode():
        result = P.probe(probe_vae(inprocess_sd_vae), torch.rand(1, 64, 72, 3),
                         P.ProbeOptions(mode="map", map_passes=7))
    section = result.report["influence"]
    assert section["decoder_equivalent_passes"] == 7 and section["estimator"]["backward_passes"] == 3
    assert torch.isfinite(result.influence).all()
