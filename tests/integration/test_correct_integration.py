"""Correction during sampling inside real ComfyUI.

In this process: a small random-weight UNet built with ComfyUI's own SD1.5 model classes (BaseModel, UNetModel,
ModelPatcher) runs every sampler in comfy.samplers.KSampler.SAMPLERS through comfy.sample.sample, with and
without the patch; the full-size random SD1.5 checkpoint takes several seconds per step on a CPU, too slow for
the 40-sampler sweep. Over HTTP: the random SD1.5 checkpoint through KSampler, img2img, KSamplerAdvanced and
SamplerCustomAdvanced in one prompt, with the trajectory pair.
"""
import os
import re

import pytest
import torch
from safetensors.torch import load_file

from latent_lab.adapters.correction_patch import correction_model, trajectory_model
from latent_lab.core import correct_ops, correct_schedule as schedules, trajectory
from latent_lab.core.formats import SD15
from random_models import SMALL_SD15_UNET, small_sd15_model

STEPS = 3


@pytest.fixture(scope="module")
def small_unet(comfy_inprocess):
    """A ComfyUI ModelPatcher around a random-weight SD1.5-type UNet with 32 base channels."""
    return small_sd15_model(SMALL_SD15_UNET)


def conditioning(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 768, generator=generator), {}]]


def run(model, sampler, noise, cfg=4.0, latent=None, denoise=1.0, steps=STEPS, scheduler="normal"):
    import comfy.sample
    latent = torch.zeros_like(noise) if latent is None else latent
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, conditioning(1), conditioning(2), latent,
                               denoise=denoise, disable_pbar=True, seed=7)


def blog_steps(strength_scale=1.0):
    schedule = schedules.blog_schedule()
    if strength_scale != 1.0:
        schedule = tuple(schedules.operation(op.kind, op.start, op.end, op.strength * strength_scale, **op.options)
                         for op in schedule)
    return schedules.compile_schedule(schedule, SD15)


def sampler_names():
    import comfy.samplers
    return list(comfy.samplers.KSampler.SAMPLERS)


@pytest.fixture(scope="module")
def noise():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))


def test_every_sampler_runs_with_the_patch_and_is_changed_by_it(small_unet, noise):
    import comfy.samplers
    # A steady correction at every step: any sampler that calls the model at all sees it.
    steps = schedules.compile_schedule(schedules.parse_schedule("center 0-100 channels=all global=1\n"
                                                            "maximize 0-100 channels=all boundary=3"), SD15)
    patched = correction_model(small_unet, steps, 1.0)
    off = correction_model(small_unet, steps, 0.0)
    failures = []
    for name in comfy.samplers.KSampler.SAMPLERS:
        plain = run(small_unet, name, noise)
        corrected = run(patched, name, noise)
        if not torch.isfinite(corrected).all() or torch.equal(corrected, plain):
            failures.append(f"{name}: corrected run {'not finite' if not torch.isfinite(corrected).all() else 'unchanged'}")
        if not torch.equal(run(off, name, noise), plain):
            failures.append(f"{name}: strength 0 differs from the unpatched run")
    assert not failures, "\n".join(failures)
    assert len(comfy.samplers.KSampler.SAMPLERS) >= 30


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "uni_pc"])
def test_blog_preset_changes_common_samplers_and_zero_strengths_do_not(small_unet, noise, sampler):
    plain = run(small_unet, sampler, noise, steps=10)
    corrected = run(correction_model(small_unet, blog_steps(), 1.0), sampler, noise, steps=10)
    assert torch.isfinite(corrected).all() and not torch.equal(corrected, plain)
    assert torch.equal(run(correction_model(small_unet, blog_steps(0.0), 1.0), sampler, noise, steps=10), plain)


def test_final_centering_reaches_the_output_with_euler(small_unet, noise):
    steps = schedules.compile_schedule(schedules.parse_schedule("center 0-100 channels=all global=0"), SD15)
    out = run(correction_model(small_unet, steps, 1.0), "euler", noise)
    plain = run(small_unet, "euler", noise)
    scale = plain.abs().max().item()
    assert out.mean(dim=(2, 3)).abs().max().item() < 1e-5 * scale < plain.mean(dim=(2, 3)).abs().max().item()


def test_batch_of_three_items_is_corrected_independently(small_unet):
    generator = torch.Generator().manual_seed(11)
    noise = torch.randn(3, 4, 8, 8, generator=generator) * torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1)
    contents = torch.randn(3, 4, 8, 8, generator=generator) * torch.tensor([1.0, 8.0, 30.0]).view(3, 1, 1, 1)
    model = correction_model(small_unet, blog_steps(), 1.0)
    together = run(model, "euler", noise, latent=contents, denoise=0.7, steps=6)
    for item in range(3):
        alone = run(model, "euler", noise[item:item + 1], latent=contents[item:item + 1], denoise=0.7, steps=6)
        scale = alone.abs().max().item()
        assert (together[item:item + 1] - alone).abs().max().item() <= 1e-4 * scale, item
    plain = run(small_unet, "euler", noise, latent=contents, denoise=0.7, steps=6)
    assert all(not torch.equal(together[i], plain[i]) for i in range(3))


def test_img2img_progress_runs_over_the_partial_schedule(small_unet, noise):
    record = trajectory.Trajectory(correct_ops.scaled_affine(SD15.rgb_affine(), SD15), SD15.channel_names)
    run(trajectory_model(small_unet, record), "euler", noise, latent=torch.randn(1, 4, 8, 8), denoise=0.5, steps=4)
    model_record = trajectory.Trajectory(correct_ops.scaled_affine(SD15.rgb_affine(), SD15), SD15.channel_names)
    run(trajectory_model(small_unet, model_record, "model"), "euler", noise, latent=torch.randn(1, 4, 8, 8),
        denoise=0.5, steps=4)
    percents = [f.percents[0] for f in record.runs[-1].frames]
    assert percents == pytest.approx([0, 25, 50, 75])
    model_percents = [f.percents[0] for f in model_record.runs[-1].frames]
    assert 40 < model_percents[0] < 60 and model_percents == sorted(model_percents)
    assert record.runs[-1].output is not None


def test_composes_with_comfyuis_own_post_cfg_and_cfg_function_patches(small_unet, noise):
    import comfy.samplers
    from comfy_extras.nodes_cfg import CFGZeroStar
    from comfy_extras.nodes_model_advanced import RescaleCFG
    steps = blog_steps()
    ours_then_zero = CFGZeroStar.execute(correction_model(small_unet, steps, 1.0))[0]
    chain = ours_then_zero.model_options["sampler_post_cfg_function"]
    assert len(chain) == 2 and type(chain[0]).__name__ == "CorrectionPatch"

    # cfg_function with real tensors: both post-CFG functions applied, ours first
    x = torch.randn(2, 4, 8, 8) * 5
    cond, uncond = torch.randn(2, 4, 8, 8) * 4, torch.randn(2, 4, 8, 8) * 4
    sigma = torch.full((2,), 14.6)
    options = {**ours_then_zero.model_options,
               "transformer_options": {"sample_sigmas": torch.tensor([14.6, 3.0, 0.0])}}
    out = comfy.samplers.cfg_function(
        small_unet.model, cond, uncond, 4.0, x, sigma, model_options=options)
    args = {"denoised": uncond + (cond - uncond) * 4.0, "cond_denoised": cond, "uncond_denoised": uncond,
            "cond_scale": 4.0, "sigma": sigma, "input": x, "model": small_unet.model, "model_options": options}
    expected = chain[1]({**args, "denoised": chain[0](args)})
    torch.testing.assert_close(out, expected)

    # a full run with RescaleCFG in the CFG-function slot, ours and CFG-Zero* as post-CFG functions
    rescaled = RescaleCFG().patch(small_unet, 0.7)[0]
    with_ours = CFGZeroStar.execute(correction_model(rescaled, steps, 1.0))[0]
    assert "sampler_cfg_function" in with_ours.model_options
    without = CFGZeroStar.execute(rescaled)[0]
    a, b = run(with_ours, "dpmpp_2m", noise, steps=6), run(without, "dpmpp_2m", noise, steps=6)
    assert torch.isfinite(a).all() and not torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ over HTTP

def _sampler_nodes(checkpoint: str) -> dict:
    model, clip = ["ckpt", 0], ["ckpt", 1]
    centered = "center 0-100 channels=all global=1"
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "correct": {"class_type": "LatentLabCorrection", "inputs": {
            "model": model, "preset": "custom", "strength": 1.0, "timeline": "run", "schedule": centered, "format": "auto"}},
        "record": {"class_type": "LatentLabTrajectoryRecorder", "inputs": {
            "model": ["correct", 0], "preview_side": 16, "timeline": "run", "format": "auto"}},
        "empty3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}},
        "empty1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["record", 0], "seed": 5, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty3", 0], "denoise": 1.0}},
        "view": {"class_type": "LatentLabTrajectory", "inputs": {
            "trajectory": ["record", 1], "latent": ["ks", 0], "frames": 4, "tile_width": 64, "boundary": 4.0}},
        "img2img": {"class_type": "KSampler", "inputs": {
            "model": ["correct", 0], "seed": 6, "steps": 2, "cfg": 1.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["first", 0], "denoise": 0.5}},
        "first": {"class_type": "LatentFromBatch", "inputs": {"samples": ["ks", 0], "batch_index": 0, "length": 1}},
        "ksa": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["correct", 0], "add_noise": "enable", "noise_seed": 8, "steps": 4, "cfg": 1.0,
            "sampler_name": "euler_ancestral", "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["empty1", 0], "start_at_step": 2, "end_at_step": 4, "return_with_leftover_noise": "disable"}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 9}},
        "guider": {"class_type": "CFGGuider", "inputs": {
            "model": ["correct", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 1.0}},
        "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "heun"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["correct", 0], "scheduler": "simple", "steps": 1, "denoise": 1.0}},
        "custom": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty1", 0]}},
        "control": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 6, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty1", 0], "denoise": 1.0}},
    }


def _saved_latent(server, outputs, node_id) -> torch.Tensor:
    entry = outputs[node_id]["latents"][0]
    path = os.path.join(server.output_dir, entry["subfolder"], entry["filename"])
    return load_file(path)["latent_tensor"]


def test_correction_and_trajectory_in_every_sampler_node_over_http(comfy_server, random_sd15_checkpoint):
    prompt = _sampler_nodes(random_sd15_checkpoint)
    for node in ("ks", "img2img", "ksa", "custom", "control"):
        prompt[f"save_{node}"] = {"class_type": "SaveLatent", "inputs": {
            "samples": [node, 0], "filename_prefix": f"latents/latentlab_correct_{node}"}}
    outputs = comfy_server.run(prompt, timeout=900)

    def centered(node):
        samples = _saved_latent(comfy_server, outputs, f"save_{node}")
        return samples.mean(dim=(2, 3)).abs().max().item() <= 1e-4 * max(samples.abs().max().item(), 1.0)

    # Every x0 is centered, and these samplers end on the last x0: each item's channel means are 0.
    for node in ("ks", "img2img", "ksa", "custom"):
        assert centered(node), node
    assert not centered("control")  # the same model without the patch
    view = outputs["view"]
    assert len(view["images"]) == 6  # a filmstrip and a plot per batch item
    text = view["text"][0]
    assert re.match(r"2 model calls over 2 steps", text) and "matches no recorded run" not in text
