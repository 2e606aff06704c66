"""CFG Sweep Sampler input validation (everything that is refused before sampling starts)."""
import pytest
import torch

from latent_lab.core.errors import LatentLabInputError
from latent_lab.nodes.sweep import CFGSweepSampler, parse_axes


def run(latent=None, cfg_values="3, 7", seeds="", max_cells=64, seed=5, model_batch="all cells", positive=(),
        steps=4, denoise=1.0, max_batch=0, sampler="euler", scheduler="normal", model=None, negative=()):
    latent = latent if latent is not None else {"samples": torch.zeros(1, 4, 8, 8)}
    return CFGSweepSampler().sweep(model, seed, steps, cfg_values, sampler, scheduler, list(positive), list(negative),
                                   latent, denoise, seeds, max_batch, model_batch, max_cells)


def test_batch_of_more_than_one_latent_is_refused():
    with pytest.raises(LatentLabInputError, match="CFG Sweep Sampler: The latent_image has a batch of 2") as caught:
        run({"samples": torch.zeros(2, 4, 8, 8)})
    assert "Latent From Batch" in caught.value.fix


@pytest.mark.parametrize("cfg_values,seeds,match", [
    ("3, x", "", "not a number"),
    ("3, 150", "", "outside 0..100"),
    ("", "", "CFG list is empty"),
    ("3, 3", "", "appears twice"),
    ("2-12 (-2)", "", "points away"),
    ("3", "1.5", "not a whole number"),
    ("3", "+2, 7", "whole seed list"),
])
def test_bad_lists_are_refused_with_the_node_name(cfg_values, seeds, match):
    with pytest.raises(LatentLabInputError, match=match) as caught:
        run(cfg_values=cfg_values, seeds=seeds)
    assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")
    message = CFGSweepSampler.VALIDATE_INPUTS(cfg_values=cfg_values, seeds=seeds)
    assert isinstance(message, str) and "CFG Sweep Sampler" in message


def test_non_finite_latent_is_refused():
    with pytest.raises(LatentLabInputError, match="NaN"):
        run({"samples": torch.full((1, 4, 8, 8), float("nan"))})


def test_more_cells_than_the_limit_is_refused():
    with pytest.raises(LatentLabInputError, match="65 cells, more than max_cells \\(64\\)"):
        run(cfg_values="1-65")
    with pytest.raises(LatentLabInputError, match="12 cells, more than max_cells \\(10\\)"):
        run(cfg_values="1-6", seeds="+2", max_cells=10)


def test_unknown_model_batch_is_refused_with_the_choices():
    with pytest.raises(LatentLabInputError, match="CFG Sweep Sampler: Unknown model_batch 'fast'") as caught:
        run(model_batch="fast")
    assert "auto, all cells, per cell (exact)" in caught.value.fix


@pytest.mark.parametrize("positive, match", [
    ((), "positive input is not a ComfyUI CONDITIONING"),
    (([torch.zeros(2, 77, 768), {}],), "positive conditioning holds a batch of 2 prompts"),
])
def test_conditioning_that_is_not_one_prompt_is_refused_before_sampling(positive, match):
    with pytest.raises(LatentLabInputError, match=match) as caught:
        run(positive=positive)
    assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")


def test_validate_inputs_accepts_good_lists_and_linked_inputs():
    assert CFGSweepSampler.VALIDATE_INPUTS(cfg_values="2-12 [6]", seeds="+4") is True
    assert CFGSweepSampler.VALIDATE_INPUTS(cfg_values="7", seeds="") is True
    assert CFGSweepSampler.VALIDATE_INPUTS() is True


def test_axes_follow_the_seed_widget():
    assert parse_axes("3, 7", "", 42) == ([3.0, 7.0], [42])
    assert parse_axes("3", "+3", 42) == ([3.0], [42, 43, 44])
    assert parse_axes("3", " 1, 9 ", 42) == ([3.0], [1, 9])


class PatcherOn:
    """What per_cell_batches reads of ComfyUI's ModelPatcher: the device the model runs on."""
    def __init__(self, device: str):
        self.load_device = torch.device(device)


@pytest.mark.parametrize("device, auto, exact, expected", [
    ("cpu", True, False, True),      # auto on a CPU: one cell at a time, bitwise equal to separate runs
    ("cuda", True, False, False),    # auto on a GPU: every cell of a chunk in one model call
    ("cpu", False, False, False),    # all cells
    ("cuda", False, True, True),     # per cell (exact)
])
def test_auto_model_batch_evaluates_per_cell_on_a_cpu_only(device, auto, exact, expected):
    from latent_lab.adapters.sweep_sampler import per_cell_batches
    assert per_cell_batches(PatcherOn(device), auto=auto, exact=exact) is expected


def test_model_batch_defaults_to_auto():
    spec = CFGSweepSampler.INPUT_TYPES()["required"]["model_batch"]
    assert spec[0] == ["auto", "all cells", "per cell (exact)"] and spec[1]["default"] == "auto"


@pytest.mark.parametrize("inputs, match", [
    ({"denoise": float("nan")}, "denoise is nan, not a finite number"),
    ({"denoise": -0.5}, "denoise is -0.5, outside 0.0..1.0"),
    ({"steps": float("nan")}, "steps is nan, not a finite number"),
    ({"steps": 0}, "steps is 0, outside 1..10000"),
    ({"seed": float("inf")}, "seed is inf, not a finite number"),
    ({"max_batch": -1}, "max_batch is -1, outside 0..4096"),
    ({"max_cells": 0}, "max_cells is 0, outside 1..4096"),
])
def test_number_inputs_an_api_client_may_send_are_refused_with_the_node_name(inputs, match):
    with pytest.raises(LatentLabInputError, match=match) as caught:
        run(**inputs)
    assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")
    assert caught.value.fix.startswith("Set " + next(iter(inputs)))


@pytest.mark.parametrize("inputs, match", [
    ({"sampler": "euler_turbo"}, "Unknown sampler_name 'euler_turbo'"),
    ({"scheduler": 3}, "Unknown scheduler 3"),
    ({"cfg_values": 7}, "cfg_values and seeds must be text"),
    ({"seeds": None}, "cfg_values and seeds must be text"),
])
def test_choices_and_texts_of_the_wrong_kind_are_refused_with_the_node_name(inputs, match):
    with pytest.raises(LatentLabInputError, match=match) as caught:
        run(**inputs)
    assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")


ONE_PROMPT = ([torch.zeros(1, 77, 768), {}],)


class PatcherWithout:
    """A MODEL-like object missing what the sweep reads of ComfyUI's ModelPatcher (here: load_device)."""
    model_options = {}

    def clone(self):
        return self

    def get_model_object(self, name):
        return None


@pytest.mark.parametrize("model", [None, "model.safetensors", PatcherWithout()])
def test_anything_but_a_model_is_refused_before_comfyui_is_touched(model):
    with pytest.raises(LatentLabInputError, match="The model input is not a ComfyUI MODEL") as caught:
        run(model=model, positive=ONE_PROMPT, negative=ONE_PROMPT, model_batch="auto")
    assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")
    assert "Load Checkpoint" in caught.value.fix


def guidance_run(guidance_values, **options):
    latent = options.pop("latent", {"samples": torch.zeros(1, 4, 8, 8)})
    prompt = [[torch.zeros(1, 4, 8), {}]]
    return CFGSweepSampler().sweep(options.pop("model", None), 5, 4, options.pop("cfg_values", "1"), "euler",
                                   "normal", prompt, prompt, latent, 1.0, "", 0, "all cells",
                                   options.pop("max_cells", 64), guidance_values=guidance_values)


@pytest.mark.parametrize("guidance_values, match", [
    ("2, x", "not a number"),
    ("3, 150", "guidance 150 .*outside 0..100"),
    ("3.5, 3.5", "guidance 3.5 appears twice"),
    ("+3", "only for seed lists"),
])
def test_bad_guidance_lists_are_refused_with_the_node_name(guidance_values, match):
    with pytest.raises(LatentLabInputError, match=match) as caught:
        guidance_run(guidance_values)
    assert str(caught.value).startswith("Latent Lab · CFG Sweep Sampler:")
    message = CFGSweepSampler.VALIDATE_INPUTS(cfg_values="1", guidance_values=guidance_values)
    assert isinstance(message, str) and "CFG Sweep Sampler" in message


def test_guidance_values_are_an_optional_last_input_that_defaults_to_no_axis():
    types = CFGSweepSampler.INPUT_TYPES()
    assert list(types["optional"]) == ["guidance_values"] and types["optional"]["guidance_values"][1]["default"] == ""
    assert CFGSweepSampler.VALIDATE_INPUTS(cfg_values="1", guidance_values="") is True
    assert CFGSweepSampler.VALIDATE_INPUTS(cfg_values="1", guidance_values="2-5 [4]") is True
    with pytest.raises(LatentLabInputError, match="16 cells, more than max_cells \\(10\\)"):
        guidance_run("1-8", cfg_values="1, 2", max_cells=10)


class NoGuidanceModel:
    """Stands in for a ComfyUI ModelPatcher around a model without a guidance embedding (an SD-type UNet)."""
    load_device = torch.device("cpu")
    model_options = {}

    def __init__(self):
        self.model = type("SD15", (), {"model_config": type("Config", (), {"unet_config": {"in_channels": 4}})()})()

    def clone(self):
        return self

    def get_model_object(self, name):
        return torch.nn.Identity()


def test_a_guidance_list_for_a_model_without_a_guidance_input_is_refused():
    with pytest.raises(LatentLabInputError, match="model \\(SD15\\) has no guidance input") as caught:
        guidance_run("2, 3.5", model=NoGuidanceModel())
    assert "Leave guidance_values empty" in caught.value.fix


@pytest.mark.parametrize("shape", [(1, 16, 3, 8, 8), (1, 8, 64), (1, 128, 4, 4)])
def test_video_audio_and_many_channel_latents_reach_the_model_check(shape):
    with pytest.raises(LatentLabInputError, match="not a ComfyUI MODEL"):
        run({"samples": torch.zeros(shape)}, positive=[[torch.zeros(1, 4, 8), {}]],
            negative=[[torch.zeros(1, 4, 8), {}]])
    with pytest.raises(LatentLabInputError, match="shape \\(1, 4\\)"):
        run({"samples": torch.zeros(1, 4)})
