"""Latent Trajectory recorders inside real ComfyUI: two recorders chained around Latent Correction both record.

ComfyUI's ModelPatcher.clone copies model_options (where post-CFG functions live) deeply, while the OUTER_SAMPLE
wrappers are copied by reference. A recorder's post-CFG function must still fill the record its node returned
after the model it patched is cloned again downstream (by Latent Correction, a second recorder, or any node).
In this process: a small random-weight SD1.5-type UNet; over HTTP: the random SD1.5 checkpoint at 64 px, 2 steps,
wired like the shipped trajectory template (recorder -> Latent Correction -> recorder -> KSampler).
"""
import pytest
import torch

from latent_lab.adapters.correction_patch import correction_model, trajectory_model
from latent_lab.core import correct, trajectory
from latent_lab.core.formats import SD15
from random_models import small_sd15_model

SMALL_SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "transformer_depth_output": [1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
STEPS = 3


@pytest.fixture(scope="module")
def small_unet(comfy_inprocess):
    return small_sd15_model(SMALL_SD15_UNET)


def conditioning(seed: int):
    return [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed)), {}]]


def new_record():
    return trajectory.Trajectory(correct.scaled_affine(SD15.rgb_affine(), SD15), SD15.channel_names, 16)


def test_two_recorders_around_a_correction_both_record_every_call(small_unet):
    import comfy.sample
    before, after = new_record(), new_record()
    steps = correct.compile_schedule(correct.parse_schedule("center 0-100 channels=all global=1"), SD15)
    model = trajectory_model(correction_model(trajectory_model(small_unet, before), steps, 1.0), after)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    out = comfy.sample.sample(model, noise, STEPS, 4.0, "euler", "normal", conditioning(1), conditioning(2),
                              torch.zeros_like(noise), disable_pbar=True, seed=7)
    for record in (before, after):
        run, matched = record.find_run(out)
        assert matched and len(run.frames) == STEPS
    # the second recorder sees the corrected predictions, the first the uncorrected ones
    first_means = before.runs[-1].frames[-1].stats[0, :, 0]
    second_means = after.runs[-1].frames[-1].stats[0, :, 0]
    assert second_means.abs().max() < 1e-4 < first_means.abs().max()


def test_the_trajectory_template_wiring_over_http(comfy_server, random_sd15_checkpoint):
    model, clip = ["ckpt", 0], ["ckpt", 1]
    schedule = "center 0-100 channels=all global=1"
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": random_sd15_checkpoint}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "before": {"class_type": "LatentLabTrajectoryRecorder", "inputs": {
            "model": model, "preview_side": 16, "timeline": "run", "format": "auto"}},
        "correct": {"class_type": "LatentLabCorrection", "inputs": {
            "model": ["before", 0], "preset": "custom", "strength": 1.0, "timeline": "run", "schedule": schedule,
            "format": "auto"}},
        "after": {"class_type": "LatentLabTrajectoryRecorder", "inputs": {
            "model": ["correct", 0], "preview_side": 16, "timeline": "run", "format": "auto"}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["after", 0], "seed": 42, "steps": 2, "cfg": 9.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
        "view_before": {"class_type": "LatentLabTrajectory", "inputs": {
            "trajectory": ["before", 1], "latent": ["ks", 0], "frames": 8, "tile_width": 128, "boundary": 4.0}},
        "view_after": {"class_type": "LatentLabTrajectory", "inputs": {
            "trajectory": ["after", 1], "latent": ["ks", 0], "frames": 8, "tile_width": 128, "boundary": 4.0}},
    }
    outputs = comfy_server.run(prompt, timeout=900)
    for node in ("view_before", "view_after"):
        text = outputs[node]["text"][0]
        assert text.startswith("2 model calls over 2 steps") and "matches no recorded run" not in text, node
        assert len(outputs[node]["images"]) == 2, node  # a filmstrip and a plot
