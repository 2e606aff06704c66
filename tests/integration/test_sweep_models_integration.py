"""Guidance and CFG sweeps on tiny random-weight Flux.1-dev-, SD3- and Wan-type models, in-process in ComfyUI.

A guidance cell must equal FluxGuidance(g) -> KSampler with its seed and CFG: bitwise in model_batch
"per cell (exact)", within the CFG axis's float-rounding bound (`close`) in "all cells". CFG sweeps on the SD3
(16-channel MMDiT) and Wan (5-D video latents) types are held to the same two kinds of equality.
"""
import os

import pytest
import torch

from latent_lab.core.errors import LatentLabInputError
from latent_lab.nodes.sweep import BATCHED, EXACT, CFGSweepSampler, SweepGrid

from random_dit_models import cached_hunyuan_video, flux_model, sd3_model, wan_model
from test_sweep_integration import base_prompt, close, ksampler_node, max_diff, save_node, saved_latent, sweep_node

STEPS = 3
GUIDANCE_SAMPLERS = ["euler", "dpmpp_2m", "heun", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde"]


@pytest.fixture(scope="module")
def flux(comfy_inprocess):
    return flux_model(guidance=True, seed=0)


@pytest.fixture(scope="module")
def sd3(comfy_inprocess):
    return sd3_model(seed=0)


@pytest.fixture(scope="module")
def wan(comfy_inprocess):
    return wan_model(seed=0)


def image_latent(channels=4, size=8):
    # an Empty Latent Image's 4 channels: the sampler widens them to the model's 16, as KSampler does
    return {"samples": torch.zeros(1, channels, size, size)}


def video_latent(frames=3, size=8):
    return {"samples": torch.zeros(1, 16, frames, size, size)}


def sweep(model, positive, negative, sampler, cfg_values, seed, latent, guidance_values="", seeds="",
          model_batch=EXACT, max_batch=0):
    out = CFGSweepSampler().sweep(model, seed, STEPS, cfg_values, sampler, "simple", positive, negative, latent, 1.0,
                                  seeds, max_batch, model_batch, 64, guidance_values=guidance_values)
    return out["result"][0]["samples"], out["result"][1]


def ksampler(model, positive, negative, sampler, cfg, seed, latent, guidance=None):
    import nodes
    from comfy_extras.nodes_flux import FluxGuidance
    if guidance is not None:
        positive = FluxGuidance.execute(positive, guidance).result[0]
    return nodes.common_ksampler(model, seed, STEPS, cfg, sampler, "simple", positive, negative, latent)[0]["samples"]


def cell_of(samples, cell):
    return samples[cell["index"]:cell["index"] + 1]


@pytest.mark.parametrize("sampler", GUIDANCE_SAMPLERS)
def test_exact_guidance_sweep_is_bitwise_equal_to_flux_guidance_then_ksampler(flux, sampler):
    model, positive, negative = flux
    samples, info = sweep(model, positive, negative, sampler, "1", 11, image_latent(), "1.5, 3.5, 6", seeds="+2")
    assert info["axes"]["x"]["name"] == "guidance" and info["axes"]["x"]["labels"][1] == "guidance 3.5"
    assert samples.shape == (6, 16, 8, 8)
    for cell in info["cells"]:
        reference = ksampler(model, positive, negative, sampler, cell["cfg"], cell["seed"], image_latent(),
                             cell["guidance"])
        assert torch.equal(cell_of(samples, cell), reference), f"{sampler} {cell['label']}: " \
            f"{max_diff(cell_of(samples, cell), reference)}"
    assert not torch.equal(samples[0], samples[1])  # the guidance reaches the model


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m_sde"])
def test_batched_guidance_sweep_is_one_model_call_per_step_and_close_to_separate_runs(flux, sampler):
    model, positive, negative = flux
    samples, info = sweep(model, positive, negative, sampler, "1", 4, image_latent(), "2-5 [4]",
                          model_batch=BATCHED)
    assert info["run"]["chunks"] == [4] and info["run"]["model_calls"] == info["run"]["steps_run"]
    assert info["run"]["rows_evaluated"] == 4 * STEPS  # CFG 1: no negative rows, no rows shared across guidance
    for cell in info["cells"]:
        reference = ksampler(model, positive, negative, sampler, 1.0, 4, image_latent(), cell["guidance"])
        assert close(cell_of(samples, cell), reference), f"{sampler} {cell['label']}: " \
            f"{max_diff(cell_of(samples, cell), reference)}"


@pytest.mark.parametrize("model_batch", [EXACT, BATCHED])
def test_cfg_by_guidance_grid_equals_separate_runs(flux, model_batch):
    model, positive, negative = flux
    samples, info = sweep(model, positive, negative, "dpmpp_2m", "1, 3", 2, image_latent(), "2, 5",
                          model_batch=model_batch)
    assert (info["axes"]["x"]["name"], info["axes"]["y"]["name"]) == ("cfg", "guidance")
    assert [c["label"] for c in info["cells"]] == ["CFG 1 · guidance 2", "CFG 3 · guidance 2",
                                                    "CFG 1 · guidance 5", "CFG 3 · guidance 5"]
    for cell in info["cells"]:
        reference = ksampler(model, positive, negative, "dpmpp_2m", cell["cfg"], 2, image_latent(), cell["guidance"])
        same = torch.equal if model_batch == EXACT else close
        assert same(cell_of(samples, cell), reference), cell["label"]
    images = samples[:, :3, :, :].permute(0, 2, 3, 1).clamp(0, 1)
    grid = SweepGrid().grid(torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=32).permute(0, 2, 3, 1),
                            info, True, 1.0, 0, 32.0)
    assert grid["result"][0].shape[0] == 1


def test_chunked_guidance_sweep_gives_the_same_cells(flux):
    model, positive, negative = flux
    whole, _ = sweep(model, positive, negative, "euler", "1", 3, image_latent(), "2, 3, 4, 5", model_batch=BATCHED)
    split, info = sweep(model, positive, negative, "euler", "1", 3, image_latent(), "2, 3, 4, 5",
                        model_batch=BATCHED, max_batch=3)
    assert info["run"]["chunks"] == [2, 2]
    assert close(split, whole)


def test_an_existing_model_function_wrapper_is_chained(flux):
    model, positive, negative = flux
    wrapped = model.clone()
    wrapped.set_model_unet_function_wrapper(
        lambda apply_model, args: apply_model(args["input"], args["timestep"], **args["c"]) * 0.9)
    samples, info = sweep(wrapped, positive, negative, "euler", "1", 6, image_latent(), "2, 4")
    plain, _ = sweep(model, positive, negative, "euler", "1", 6, image_latent(), "2, 4")
    for cell in info["cells"]:
        reference = ksampler(wrapped, positive, negative, "euler", 1.0, 6, image_latent(), cell["guidance"])
        assert torch.equal(cell_of(samples, cell), reference)
    assert not torch.equal(samples, plain)


def test_inputs_are_not_modified(flux):
    model, positive, negative = flux
    before = positive[0][1].copy()
    sweep(model, positive, negative, "euler", "1", 6, image_latent(), "2, 4")
    assert positive[0][1] == before and "guidance" not in negative[0][1]


def test_models_without_a_guidance_input_are_refused(comfy_inprocess, sd3):
    schnell, positive, negative = flux_model(guidance=False, seed=0)
    for model, pos, neg in ((schnell, positive, negative), sd3):
        with pytest.raises(LatentLabInputError, match="has no guidance input") as caught:
            sweep(model, pos, neg, "euler", "1", 0, image_latent(16), "2, 3.5")
        assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m_sde"])
def test_sd3_type_cfg_sweep_equals_separate_runs(sd3, sampler):
    model, positive, negative = sd3
    exact, info = sweep(model, positive, negative, sampler, "1, 4.5", 8, image_latent(16), seeds="+2")
    batched, _ = sweep(model, positive, negative, sampler, "1, 4.5", 8, image_latent(16), seeds="+2",
                       model_batch=BATCHED)
    for cell in info["cells"]:
        reference = ksampler(model, positive, negative, sampler, cell["cfg"], cell["seed"], image_latent(16))
        assert torch.equal(cell_of(exact, cell), reference), f"{sampler} {cell['label']}"
        assert close(cell_of(batched, cell), reference), f"{sampler} {cell['label']}"


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m_sde"])
def test_wan_type_video_cfg_sweep_equals_separate_runs(wan, sampler):
    model, positive, negative = wan
    exact, info = sweep(model, positive, negative, sampler, "1, 5", 5, video_latent())
    batched, batched_info = sweep(model, positive, negative, sampler, "1, 5", 5, video_latent(), model_batch=BATCHED)
    assert exact.shape == (2, 16, 3, 8, 8) and batched_info["run"]["chunks"] == [2]
    for cell in info["cells"]:
        reference = ksampler(model, positive, negative, sampler, cell["cfg"], 5, video_latent())
        assert torch.equal(cell_of(exact, cell), reference), f"{sampler} {cell['label']}"
        assert close(cell_of(batched, cell), reference), f"{sampler} {cell['label']}"


def test_wan_type_model_refuses_a_guidance_list(wan):
    model, positive, negative = wan
    with pytest.raises(LatentLabInputError, match="WAN21\\) has no guidance input"):
        sweep(model, positive, negative, "euler", "1", 0, video_latent(), "2, 3")


# ---- posted prompts: the optional input through a real server -------------------------------------------------

def test_a_bad_guidance_list_is_refused_when_queued(comfy_server, random_sd15_checkpoint):
    prompt = base_prompt(random_sd15_checkpoint)
    prompt["sweep"] = sweep_node("euler", "1", 1, 2)
    prompt["sweep"]["inputs"]["guidance_values"] = "2, 150"
    prompt["save"] = save_node("sweep")
    with pytest.raises(comfy_server.PromptError, match="guidance 150 .*outside 0..100"):
        comfy_server.queue(prompt)


def test_a_guidance_list_on_a_model_without_a_guidance_input_fails_with_the_reason(comfy_server,
                                                                                      random_sd15_checkpoint):
    prompt = base_prompt(random_sd15_checkpoint)
    prompt["sweep"] = sweep_node("euler", "1", 1, 2)
    prompt["sweep"]["inputs"]["guidance_values"] = "2, 3.5"
    prompt["save"] = save_node("sweep")
    with pytest.raises(comfy_server.PromptError, match="has no guidance input"):
        comfy_server.run(prompt, timeout=600)


def test_models_whose_extra_conds_read_the_seed_are_found_by_feature(comfy_inprocess, flux, sd3, wan):
    import comfy.model_base as model_base
    from latent_lab.adapters.sweep_sampler import seeded_conds

    def stand_in(model_class):  # only the class is read
        return type("Patcher", (), {"model": object.__new__(model_class)})()
    for model_class, method in ((model_base.SD_X4Upscaler, "extra_conds"), (model_base.SD21UNCLIP, "encode_adm"),
                                (model_base.HunyuanImage21Refiner, "concat_cond")):
        assert seeded_conds(stand_in(model_class), [], []) == f"{model_class.__name__}.{method} reads the seed"
    for model, positive, negative in (flux, sd3, wan):
        assert seeded_conds(model, positive, negative) == ""
    unclip = [[torch.zeros(1, 77, 2048), {"unclip_conditioning": [{"strength": 1.0}]}]]
    assert "unCLIP" in seeded_conds(stand_in(model_base.SDXL), unclip, [])


@pytest.fixture(scope="module")
def random_hunyuan_video(comfy_server, comfy_path) -> str:
    """File name (in models/diffusion_models) of the HunyuanVideo-type guidance-distilled model: use with
    UNETLoader; its text inputs are SD1.x CLIP-L sized, so the random SD1.5 checkpoint's CLIP conditions it."""
    name = "latentlab_random_hunyuan_video.safetensors"
    folder = os.path.join(comfy_server.models_dir, "diffusion_models")
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, name)):
        os.symlink(cached_hunyuan_video(comfy_path, 0), os.path.join(folder, name))
    return name


def guidance_prompt(checkpoint: str, unet: str, model_batch: str, sampler: str) -> dict:
    """A guidance sweep (2 and 6, CFG 1, seed 3, 2 steps) on a 5-D video latent, and FluxGuidance(g) -> KSampler
    for each g, all saved."""
    prompt = base_prompt(checkpoint)
    prompt["unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}}
    prompt["empty"] = {"class_type": "EmptyHunyuanLatentVideo",
                       "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}
    prompt["sweep"] = sweep_node(sampler, "1", 3, 2, model=("unet", 0), scheduler="simple", model_batch=model_batch)
    prompt["sweep"]["inputs"]["guidance_values"] = "2, 6"
    prompt["save_sweep"] = save_node("sweep")
    for i, guidance in enumerate((2.0, 6.0)):
        prompt[f"fg{i}"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": guidance}}
        prompt[f"k{i}"] = ksampler_node(sampler, 1.0, 3, 2, model=("unet", 0), scheduler="simple")
        prompt[f"k{i}"]["inputs"]["positive"] = [f"fg{i}", 0]
        prompt[f"save_k{i}"] = save_node(f"k{i}")
    return prompt


@pytest.mark.parametrize("model_batch, sampler", [(EXACT, "euler"), (EXACT, "euler_ancestral"), (BATCHED, "euler")])
def test_guidance_sweep_on_a_video_model_equals_flux_guidance_then_ksampler_prompts(
        comfy_server, random_sd15_checkpoint, random_hunyuan_video, model_batch, sampler):
    prompt = guidance_prompt(random_sd15_checkpoint, random_hunyuan_video, model_batch, sampler)
    outputs = comfy_server.run(prompt, timeout=900)
    swept = saved_latent(comfy_server, outputs, "save_sweep")
    assert swept.shape == (2, 16, 2, 8, 8) and not torch.equal(swept[0], swept[1])
    for i in range(2):
        reference = saved_latent(comfy_server, outputs, f"save_k{i}")
        same = torch.equal(swept[i:i + 1], reference) if model_batch == EXACT else close(swept[i:i + 1], reference)
        assert same, f"{model_batch} {sampler} guidance cell {i}: {max_diff(swept[i:i + 1], reference)}"
    assert "2 cells: 2 guidance x 1 seed" in outputs["sweep"]["text"][0]
