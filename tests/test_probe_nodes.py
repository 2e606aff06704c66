"""VAE Anomaly Probe and Latent Spot Repair nodes over a ComfyUI-shaped synthetic VAE (adapter included)."""
import json

import pytest
import torch

import probe_doubles as D
from latent_lab.adapters.vae_probe import ComfyProbeVAE
from latent_lab.core import probe as P
from latent_lab.core import probe_report as R
from latent_lab.core.errors import LatentLabInputError
from latent_lab.nodes.probe import LatentSpotRepair, VAEAnomalyProbe

DEFAULTS = dict(mode="verify", threshold=6.0, radius=3, verify_decodes=8, map_passes=24, probe_seed=0,
                sweep_sizes="", image_index=0)


@pytest.fixture(scope="module")
def vae():
    return D.ComfyVAE(D.AutoencoderKL(flawed=True, seed=1))


def run_probe(vae, image, **options):
    return VAEAnomalyProbe().run(vae, image, **{**DEFAULTS, **options})


@pytest.mark.parametrize("mode", ["verify", "map"])
def test_probe_node_outputs(mode, vae):
    image = D.random_images(1, (96, 104), seed=4)
    out = run_probe(vae, image, mode=mode, sweep_sizes="64, 128")
    latent, mask, logvar_map, magnitude_map, influence_map, report_text, verdict = out["result"]
    report = json.loads(report_text)
    assert set(report) == set(R.REPORT_KEYS)
    y, x = vae.first_stage_model.planted_cell(image.movedim(-1, 1))
    assert report["flags"]["cells"][0]["y"] == y and report["flags"]["cells"][0]["x"] == x
    assert latent["samples"].shape == (1, 4, 12, 13)
    assert torch.allclose(latent["samples"], vae.encode(image))  # the mean, as VAE Encode gives it
    assert mask.shape == (1, 96, 104) and mask[0, 8 * y:8 * y + 8, 8 * x:8 * x + 8].eq(1).all() and mask.sum() == 64
    for picture in (logvar_map, magnitude_map, influence_map):
        assert picture.ndim == 4 and picture.shape[0] == 1 and picture.shape[-1] == 3
        assert 0 <= float(picture.min()) and float(picture.max()) <= 1
    assert verdict == report["verdict"] and out["ui"]["text"][0].startswith(verdict)
    assert json.loads(out["ui"]["report"][0]) == report
    assert f"{mode} mode" in out["ui"]["text"][0] and "resolution 128x112: 1 flagged" in out["ui"]["text"][0]


def test_report_is_plain_json_even_where_a_figure_could_not_be_measured(vae):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    out = run_probe(vae, D.random_images(1, 96, seed=2), mode="map", map_passes=3)  # too few passes for some cells
    report = json.loads(out["result"][5], parse_constant=refuse)
    assert json.loads(out["ui"]["report"][0], parse_constant=refuse) == report


@pytest.mark.parametrize("mode, map_passes", [("verify", 24), ("map", 24), ("map", 13)])
def test_progress_units_add_up_to_the_announced_total(mode, map_passes, vae):
    from latent_lab.adapters.vae_probe import probe_vae
    image = D.random_images(1, 96, seed=3)
    ticks = []
    probed = probe_vae(vae, tick=ticks.append)
    plan = P.plan_probe(probed, image, P.ProbeOptions(mode=mode, map_passes=map_passes, scan_sizes=(64, 128)))
    P.run_probe(probed, plan)
    assert sum(ticks) == P.progress_units(plan, probed.channels)


def test_adapter_reads_logvar_before_comfyuis_clamp(vae):
    image = D.random_images(1, 96, seed=6)
    probed = ComfyProbeVAE(vae)
    assert probed.kind == "KL"
    mean, logvar = probed.encode_moments(image.movedim(-1, 1))
    assert float(logvar.min()) == pytest.approx(D.PLANTED_LOGVAR) and D.PLANTED_LOGVAR < -30
    with torch.no_grad():
        clamped = vae.first_stage_model.regularization(vae.first_stage_model.quant_conv(
            vae.first_stage_model.encoder(image.movedim(-1, 1) * 2 - 1)))[1]["logvar"]
    assert float(clamped.min()) == -30.0
    z = mean.clone().requires_grad_(True)
    decoded = probed.decode(z)
    assert decoded.requires_grad and decoded.shape == (1, 3, 96, 96)
    expected = vae.first_stage_model.decode(mean) * 0.5 + 0.5
    assert torch.allclose(decoded.detach(), expected, atol=1e-5)


def test_decoding_works_on_weights_made_in_inference_mode():
    """ComfyUI loads models and runs nodes under torch.inference_mode; map mode needs autograd anyway."""
    with torch.inference_mode():
        vae = D.ComfyVAE(D.AutoencoderKL(flawed=True, seed=2))
        image = D.random_images(1, 96, seed=1)
        out = run_probe(vae, image, mode="map")
    report = json.loads(out["result"][5])
    assert report["influence"]["top"][0]["y"] == report["flags"]["cells"][0]["y"]


def test_taesd_like_vae_gets_a_note_and_the_rest_runs():
    class TinyTAESD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            model = D.AutoencoderKL(flawed=True, seed=3)
            self.taesd_encoder, self.taesd_decoder = model.encoder, model.decoder

        def encode(self, x):
            return self.taesd_encoder(x)[:, :D.CHANNELS]

        def decode(self, z):
            return self.taesd_decoder(z)
    vae = D.ComfyVAE(D.AutoencoderKL())
    vae.first_stage_model = TinyTAESD()
    out = run_probe(vae, D.random_images(1, 96, seed=2))
    report = json.loads(out["result"][5])
    assert report["vae"]["has_logvar"] is False
    assert any("TAESD" in note for note in report["notes"])
    assert "TAESD" in out["ui"]["text"][0]
    assert report["flags"]["count"] == 1 and report["influence"]["cells"][0]["ratio"] > 10


def test_repair_node_with_mask_report_and_reprobe(vae):
    image = D.random_images(1, 96, seed=8)
    latent, mask, *_, report_text, _ = run_probe(vae, image)["result"]
    tagged = {**latent, "latent_lab_format": "sd15"}
    before = tagged["samples"].clone()
    for inputs in ({"mask": mask}, {"report": report_text}, {"mask": mask, "report": report_text}):
        out = LatentSpotRepair().run(tagged, "harmonic", 3, 8, vae=vae, **inputs)
        repaired, result_text = out["result"]
        result = json.loads(result_text)
        assert torch.equal(tagged["samples"], before)
        assert repaired["latent_lab_format"] == "sd15"
        assert len(result["cells"]) == 1
        row = result["reprobe"]["cells"][0]
        assert row["before_ratio"] > 20 > 3 > row["after_ratio"]
        assert "median" in out["ui"]["text"][0]


def test_repair_node_without_vae_only_repairs(vae):
    image = D.random_images(1, 96, seed=9)
    latent, mask, *_ = run_probe(vae, image)["result"]
    out = LatentSpotRepair().run(latent, "inverse_distance", 3, 8, mask=mask)
    assert "reprobe" not in json.loads(out["result"][1])
    assert (out["result"][0]["samples"] != latent["samples"]).any(1).sum() == 1


def test_repair_node_passes_the_latent_through_when_nothing_is_flagged(vae):
    """An SDXL VAE or an image without a spot flags nothing: the graph goes on with the latent as it was."""
    latent = {"samples": torch.randn(2, 4, 12, 12), "batch_index": [3, 4]}
    before = latent["samples"].clone()
    out = LatentSpotRepair().run(latent, "harmonic", 3, 8, mask=torch.zeros(1, 96, 96), vae=vae)
    assert out["result"][0] is latent and torch.equal(latent["samples"], before)
    assert json.loads(out["result"][1]) == {"method": "harmonic", "cells": []}
    assert "passes through unchanged" in out["ui"]["text"][0]


@pytest.mark.parametrize("image,message", [
    (torch.rand(1, 1, 1, 3), "VAE Anomaly Probe: The image is 1x1 px"),
    (torch.rand(1, 96, 96, 4), "VAE Anomaly Probe: IMAGE has 4 channels"),
    (torch.full((1, 96, 96, 3), float("nan")), "VAE Anomaly Probe: IMAGE contains"),
])
def test_probe_node_bad_images(image, message, vae):
    with pytest.raises(LatentLabInputError, match=message):
        run_probe(vae, image)


def test_probe_node_refuses_video_vaes_and_oversized_images(vae):
    video = D.ComfyVAE(D.AutoencoderKL(), latent_dim=3)
    with pytest.raises(LatentLabInputError, match="not a 2-D image VAE"):
        run_probe(video, D.random_images(1, 96))
    probed = ComfyProbeVAE(vae)
    assert probed.bytes_needed(512, 512, "map") > 3 * probed.bytes_needed(512, 512, "verify") > 0
    small = P.ProbeVAE(**D.plain_callables(vae.first_stage_model), bytes_needed=probed.bytes_needed,
                       room=lambda needed: probed.bytes_needed(256, 256, "map"))
    with pytest.raises(LatentLabInputError, match="Resize the image to about 224x224 px"):
        P.probe(small, D.random_images(1, 512, seed=1), P.ProbeOptions(mode="map"))


def test_repair_node_bad_inputs(vae):
    latent = {"samples": torch.randn(1, 4, 12, 12)}
    with pytest.raises(LatentLabInputError, match="Latent Spot Repair: Nothing says which cells"):
        LatentSpotRepair().run(latent, "harmonic", 3, 8)
    other = D.ComfyVAE(D.AutoencoderKL())
    other.latent_channels = 16
    mask = torch.zeros(1, 96, 96)
    mask[0, :8, :8] = 1
    with pytest.raises(LatentLabInputError, match="Latent Spot Repair: The VAE makes 16-channel latents"):
        LatentSpotRepair().run(latent, "harmonic", 3, 8, mask=mask, vae=other)
    with pytest.raises(LatentLabInputError, match="Latent Spot Repair: The report is not"):
        LatentSpotRepair().run(latent, "harmonic", 3, 8, report="not json")


def test_image_tooltip_states_the_minimum_size_for_every_radius(vae):
    """The tooltip's sizes are what the probe enforces, at every radius the widget offers."""
    import re
    inputs = VAEAnomalyProbe.INPUT_TYPES()["required"]
    tooltip = inputs["image"][1]["tooltip"]
    low, high = inputs["radius"][1]["min"], inputs["radius"][1]["max"]
    stated = {int(r): int(px) for px, px2, r in re.findall(r"(\d+)x(\d+) px at radius (\d+)", tooltip) if px == px2}
    assert {low, 3, high} <= set(stated) and "(2 x radius + 2) latent cells" in tooltip
    for radius in range(low, high + 1):
        side = (2 * radius + 2) * 8
        assert P.min_latent_side(radius) * 8 == side
        if radius in stated:
            assert stated[radius] == side
    for radius, side in stated.items():
        with pytest.raises(LatentLabInputError, match=f"needs at least {side}x{side} px"):
            run_probe(vae, D.random_images(1, side - 8, seed=1), radius=radius)
        P.plan_probe(ComfyProbeVAE(vae).probe_vae(), D.random_images(1, side, seed=1), P.ProbeOptions(radius=radius))


def test_probe_node_refuses_bad_scan_sizes_and_empty_batches_before_any_work(vae):
    with pytest.raises(LatentLabInputError, match="VAE Anomaly Probe: Resolution-scan size 100000 px"):
        run_probe(vae, D.random_images(1, 96, seed=1), sweep_sizes="256, 100000")
    with pytest.raises(LatentLabInputError, match="VAE Anomaly Probe: The IMAGE batch is empty") as refused:
        run_probe(vae, torch.zeros(0, 96, 96, 3))
    assert "Connect an IMAGE" in str(refused.value)
