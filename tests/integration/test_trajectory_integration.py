"""Latent Trajectory recorders inside real ComfyUI: two recorders chained around Latent Correction both record.

ComfyUI's ModelPatcher.clone copies model_options (where post-CFG functions live) deeply, while the OUTER_SAMPLE
wrappers are copied by reference. A recorder's post-CFG function must still fill the record its node returned
after the model it patched is cloned again downstream (by Latent Correction, a second recorder, or any node).
In this process: a small random-weight SD1.5-type UNet; over HTTP: the random SD1.5 checkpoint at 64 px, 2 steps,
wired like the shipped trajectory template (recorder -> Latent Correction -> recorder -> KSampler).
"""
import torch

from latent_lab.nodes.correct import LatentCorrection, LatentTrajectory, LatentTrajectoryRecorder
from random_models import SMALL_SD15_UNET, small_sd15_model

STEPS = 3


def conditioning(seed: int):
    return [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed)), {}]]


def test_two_recorders_around_a_correction_both_record_every_call(comfy_inprocess):
    """The template's wiring through the nodes themselves, sampled by comfy.sample with a small random UNet."""
    import comfy.sample
    model, before = LatentTrajectoryRecorder().record(small_sd15_model(SMALL_SD15_UNET), 16, "run", "sd15")
    model = LatentCorrection().patch(model, "custom", 1.0, "run", "center 0-100 channels=all global=1",
                                     "sd15")["result"][0]
    model, after = LatentTrajectoryRecorder().record(model, 16, "run", "sd15")
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    out = comfy.sample.sample(model, noise, STEPS, 4.0, "euler", "normal", conditioning(1), conditioning(2),
                              torch.zeros_like(noise), disable_pbar=True, seed=7)
    for record in (before, after):
        run, matched = record.find_run(out)
        assert matched and len(run.frames) == STEPS
        text = LatentTrajectory().view(record, {"samples": out}, 8, 64, 4.0)["ui"]["text"][0]
        assert text.startswith(f"{STEPS} model calls over {STEPS} steps")
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
    }
    for recorder in ("before", "after"):
        prompt[f"view_{recorder}"] = {"class_type": "LatentLabTrajectory", "inputs": dict(
            trajectory=[recorder, 1], latent=["ks", 0], frames=8, tile_width=128, boundary=4.0)}
    outputs = comfy_server.run(prompt, timeout=900)
    for node in ("view_before", "view_after"):
        text = outputs[node]["text"][0]
        assert text.startswith("2 model calls over 2 steps") and "matches no recorded run" not in text, node
        assert len(outputs[node]["images"]) == 2, node  # a filmstrip and a plot
