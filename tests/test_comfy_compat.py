"""The adapters against both ComfyUI cores they follow, with small doubles of each one's API.

0.3.64: model_management.get_free_memory only, fix_empty_latent_channels(model, latent_image), OOM as
torch.OutOfMemoryError, InterruptProcessingException(Exception).
0.38: ModelPatcher.get_free_memory(device) and is_dynamic(), fix_empty_latent_channels(model, latent_image,
downscale_ratio_spacial=None, downscale_ratio_temporal=None), model_management.is_oom (AcceleratorError too),
InterruptProcessingException(BaseException), samplers the sweep has not classified.
"""
import sys
import types

import pytest
import torch

from latent_lab.adapters import runtime, sweep_sampler
from latent_lab.adapters.sweep_sampler import (CLASSIFIED_SAMPLERS, KNOWN_SAMPLERS, KNOWN_SCHEDULERS,
                                               PatchScaleError, fitted_latent, free_memory_for_cells,
                                               guarded_options, noise_kind, per_cell_batches, per_cell_note,
                                               sampler_for, sampler_names, scheduler_names)
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.sweep_cfg import cfg_scale
from latent_lab.nodes.common import node_errors

GiB = 1 << 30
SHAPE = (4, 8, 8)


@pytest.fixture
def comfy_modules(monkeypatch):
    """Installs doubles as ComfyUI modules for runtime.comfy(): install(*absent_names, **name_module_pairs)."""
    def install(*absent, **modules):
        monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))  # no real submodule can load
        for name in absent:
            monkeypatch.delitem(sys.modules, f"comfy.{name}", raising=False)
        for name, module in modules.items():
            monkeypatch.setitem(sys.modules, f"comfy.{name}", module)
        runtime.comfy.cache_clear()

    runtime.comfy.cache_clear()
    yield install
    runtime.comfy.cache_clear()


def module(name: str, **attributes) -> types.ModuleType:
    double = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(double, key, value)
    return double


class Patcher0364:
    """ModelPatcher as 0.3.64 has it: no free-memory method, everything resident when loaded."""

    def __init__(self, device="cuda", size=3 * GiB, loaded=1 * GiB):
        self.load_device = torch.device(device)
        self.size, self.loaded = size, loaded

    def model_size(self):
        return self.size

    def loaded_size(self):
        return self.loaded


class Patcher038(Patcher0364):
    """ModelPatcher as 0.38 has it: asks for free memory itself; ModelPatcherDynamic streams weights."""

    def __init__(self, free, dynamic, **kwargs):
        super().__init__(**kwargs)
        self.free, self.dynamic, self.asked = free, dynamic, []

    def get_free_memory(self, device):
        self.asked.append(device)
        return self.free

    def is_dynamic(self):
        return self.dynamic


def model_management(free=10 * GiB, **attributes):
    asked = []

    def get_free_memory(dev=None, torch_free_too=False):
        asked.append(dev)
        return free

    return module("comfy.model_management", get_free_memory=get_free_memory, asked=asked, **attributes)


# ---- free memory ---------------------------------------------------------------------------------------------

def test_free_memory_asks_the_patcher_when_it_can_answer(comfy_modules):
    mm = model_management(free=2 * GiB)
    comfy_modules(model_management=mm)
    patcher = Patcher038(free=9 * GiB, dynamic=True)
    assert runtime.free_memory(patcher.load_device, patcher) == 9 * GiB
    assert patcher.asked == [patcher.load_device] and mm.asked == []


def test_free_memory_asks_model_management_for_a_patcher_without_the_method(comfy_modules):
    mm = model_management(free=2 * GiB)
    comfy_modules(model_management=mm)
    patcher = Patcher0364()
    assert runtime.free_memory(patcher.load_device, patcher) == 2 * GiB
    assert runtime.free_memory(torch.device("cuda"), None) == 2 * GiB
    assert mm.asked == [patcher.load_device, torch.device("cuda")]


def test_free_memory_outside_comfyui_sets_no_limit(comfy_modules):
    comfy_modules("model_management")
    assert runtime.free_memory(torch.device("cpu")) == float("inf")


@pytest.mark.parametrize("patcher, free", [
    (Patcher0364(), 10 * GiB - 2 * GiB),                      # 0.3.64: the unloaded 2 GiB must fit too
    (Patcher038(free=12 * GiB, dynamic=False), 12 * GiB - 2 * GiB),  # 0.38, weights resident: the same
    (Patcher038(free=12 * GiB, dynamic=True), 12 * GiB),      # 0.38, dynamic VRAM: weights stream, none held back
    (Patcher0364(device="cpu"), 10 * GiB),                    # a CPU model shares the memory it is counted in
])
def test_sweep_chunks_size_themselves_by_the_figure_each_core_gives(comfy_modules, patcher, free):
    comfy_modules(model_management=model_management(free=10 * GiB))
    assert free_memory_for_cells(patcher) == free


def test_the_probe_asks_the_vae_patcher_for_free_memory(comfy_modules):
    from latent_lab.adapters.vae_probe import ComfyProbeVAE
    loads = []
    comfy_modules(model_management=model_management(
        free=1 * GiB, load_models_gpu=lambda models, memory_required=0, force_full_load=False: loads.append(
            memory_required)))
    probe = ComfyProbeVAE.__new__(ComfyProbeVAE)  # only what room() reads: the VAE, its patcher, ComfyUI
    probe.mm = runtime.comfy("comfy.model_management")
    probe.vae = types.SimpleNamespace(device=torch.device("cuda"), patcher=Patcher038(free=6 * GiB, dynamic=True))
    assert probe.room(123.0) == 6 * GiB and loads == [123.0]
    probe.vae.patcher = Patcher0364()
    assert probe.room(5.0) == 1 * GiB


# ---- empty latents -------------------------------------------------------------------------------------------

def fix_0364(calls):
    def fix_empty_latent_channels(model, latent_image):
        calls.append(())
        return latent_image
    return fix_empty_latent_channels


def fix_038(calls):
    def fix_empty_latent_channels(model, latent_image, downscale_ratio_spacial=None, downscale_ratio_temporal=None):
        calls.append((downscale_ratio_spacial, downscale_ratio_temporal))
        if downscale_ratio_spacial is not None and torch.count_nonzero(latent_image) == 0:
            ratio = downscale_ratio_spacial / model.spacial_downscale_ratio  # 0.38 resizes an empty latent
            size = (round(latent_image.shape[-2] * ratio), round(latent_image.shape[-1] * ratio))
            latent_image = torch.zeros(latent_image.shape[:2] + size)
        return latent_image
    return fix_empty_latent_channels


def fix_spacial_only(calls):
    def fix_empty_latent_channels(model, latent_image, downscale_ratio_spacial=None):
        calls.append((downscale_ratio_spacial,))
        return latent_image
    return fix_empty_latent_channels


@pytest.mark.parametrize("make_fix, expected", [
    (fix_0364, ()),
    (fix_038, (8, 4)),
    (fix_spacial_only, (8,)),
])
def test_empty_latent_gets_the_ratios_its_fix_takes(comfy_modules, make_fix, expected):
    calls = []
    comfy_modules(sample=module("comfy.sample", fix_empty_latent_channels=make_fix(calls)))
    model = types.SimpleNamespace(spacial_downscale_ratio=8)
    latent = {"samples": torch.zeros(1, *SHAPE), "downscale_ratio_spacial": 8, "downscale_ratio_temporal": 4}
    fitted_latent(model, latent)
    assert calls == [expected]


def test_an_empty_latent_made_for_another_ratio_is_resized_as_ksampler_would(comfy_modules):
    calls = []
    comfy_modules(sample=module("comfy.sample", fix_empty_latent_channels=fix_038(calls)))
    model = types.SimpleNamespace(spacial_downscale_ratio=16)  # a /16 model fed an Empty Latent Image made at /8
    fitted = fitted_latent(model, {"samples": torch.zeros(1, 4, 64, 64), "downscale_ratio_spacial": 8})
    assert fitted.shape == (1, 4, 32, 32) and calls == [(8, None)]
    unmarked = fitted_latent(model, {"samples": torch.zeros(1, 4, 64, 64)})
    assert unmarked.shape == (1, 4, 64, 64) and calls[-1] == (None, None)


# ---- sampler and scheduler lists, unclassified samplers ------------------------------------------------------

class KSAMPLER:
    def __init__(self, function, inpaint_options=None):
        self.sampler_function = function
        self.inpaint_options = inpaint_options or {}


def sample_default(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return x


def sample_with_noise(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    return x


def samplers_038(new=("exp_heun_2_x0", "exp_heun_2_x0_sde", "cfgpp_ud10_ab")):
    names = list(KNOWN_SAMPLERS[:12]) + list(new) + list(KNOWN_SAMPLERS[12:])
    schedulers = list(KNOWN_SCHEDULERS) + ["a_new_scheduler"]
    made = []

    def sampler_object(name):
        made.append(name)
        return KSAMPLER(sample_with_noise if "sde" in name or "ancestral" in name else sample_default)

    return module("comfy.samplers", KSampler=type("KSampler", (), {"SAMPLERS": names, "SCHEDULERS": schedulers}),
                  sampler_object=sampler_object, made=made)


def test_lists_come_from_comfyui_and_the_fallback_only_without_it(comfy_modules):
    comfy_modules(samplers=samplers_038())
    assert sampler_names()[12:15] == ["exp_heun_2_x0", "exp_heun_2_x0_sde", "cfgpp_ud10_ab"]
    assert scheduler_names()[-1] == "a_new_scheduler"
    comfy_modules("samplers")
    assert sampler_names() == KNOWN_SAMPLERS and scheduler_names() == KNOWN_SCHEDULERS


def test_the_sweep_classifies_every_sampler_of_0_3_64_and_no_other():
    assert CLASSIFIED_SAMPLERS == set(KNOWN_SAMPLERS)
    assert len(KNOWN_SAMPLERS) == len(set(KNOWN_SAMPLERS))


@pytest.mark.parametrize("name", ["exp_heun_2_x0", "exp_heun_2_x0_sde", "cfgpp_ud10_ab", "a_future_sampler"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("auto, exact", [(True, False), (False, False), (False, True)])
def test_an_unclassified_sampler_runs_per_cell_whatever_was_asked(name, device, auto, exact):
    model = Patcher0364(device=device)
    assert per_cell_batches(model, auto=auto, exact=exact, sampler_name=name) is True
    assert name in per_cell_note(name) and "separate KSampler run" in per_cell_note(name)
    assert "one cell at a time" in noise_kind(name)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m_sde", "dpm_adaptive", "euler_ancestral"])
def test_a_classified_sampler_keeps_the_mode_asked_for(name):
    model = Patcher0364(device="cuda")
    assert per_cell_batches(model, auto=True, exact=False, sampler_name=name) is False
    assert per_cell_batches(model, auto=False, exact=True, sampler_name=name) is True
    assert per_cell_note(name) == ""


def test_an_unclassified_sampler_gets_the_sampler_comfyui_makes_untouched(comfy_modules):
    samplers = samplers_038()
    comfy_modules(samplers=samplers)
    own = sampler_for("exp_heun_2_x0_sde", [3, 4])
    assert own.sampler_function is sample_with_noise  # its own noise sampler, seeded as a separate run's
    wrapped = sampler_for("euler_ancestral", [3, 4])
    assert wrapped.sampler_function is not sample_with_noise  # a per-cell generator goes in
    assert samplers.made == ["exp_heun_2_x0_sde", "euler_ancestral"]


def test_run_figures_say_per_cell_and_why():
    run = sweep_sampler.run_info([[0], [1]], {}, "cfgpp_ud10_ab", 3, per_cell=True)
    assert run["model_batch"] == "per cell" and "cfgpp_ud10_ab" in run["model_batch_note"]
    assert sweep_sampler.run_info([[0, 1]], {}, "euler", 3)["model_batch_note"] == ""


# ---- out of memory -------------------------------------------------------------------------------------------

def accelerator_error(text: str, code=None):
    error = torch.AcceleratorError(text)
    if code is not None:
        error.error_code = code
    return error


@pytest.mark.parametrize("error, oom", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (accelerator_error("CUDA error: out of memory"), True),
    (accelerator_error("CUDA error: something failed", code=2), True),  # cudaErrorMemoryAllocation
    (accelerator_error("CUDA error: an illegal memory access was encountered", code=700), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_recognised_in_both_forms_without_comfyui(comfy_modules, error, oom):
    comfy_modules(model_management=model_management())  # 0.3.64: no is_oom
    assert runtime.is_out_of_memory(error) is oom


def test_comfyui_own_out_of_memory_test_is_used_where_it_exists(comfy_modules):
    seen = []

    def is_oom(e):
        seen.append(e)
        return "vram" in str(e)

    comfy_modules(model_management=model_management(is_oom=is_oom))
    assert runtime.is_out_of_memory(RuntimeError("no vram left")) is True
    assert runtime.is_out_of_memory(torch.OutOfMemoryError("x")) is False  # its word, not ours
    assert len(seen) == 2


def patch_raising(error):
    def patch(args):
        raise error
    return patch


def post_cfg_args():
    x = torch.randn((2,) + SHAPE)
    return {"denoised": x, "cond_scale": cfg_scale([2.0, 5.0], x), "input": x}


@pytest.mark.parametrize("error", [accelerator_error("CUDA error: out of memory"),
                                   torch.OutOfMemoryError("CUDA out of memory")])
def test_out_of_memory_in_a_patch_is_not_blamed_on_the_scale(comfy_modules, error):
    comfy_modules(model_management=model_management())
    options = guarded_options({"sampler_post_cfg_function": [patch_raising(error)]})
    with pytest.raises(type(error)) as caught:
        options["sampler_post_cfg_function"][0](post_cfg_args())
    assert caught.value is error


def test_another_accelerator_error_in_a_patch_is_still_explained(comfy_modules):
    comfy_modules(model_management=model_management())
    error = accelerator_error("CUDA error: device-side assert triggered", code=710)
    options = guarded_options({"sampler_post_cfg_function": [patch_raising(error)]})
    with pytest.raises(PatchScaleError, match="one CFG scale per cell"):
        options["sampler_post_cfg_function"][0](post_cfg_args())


# ---- interrupt -----------------------------------------------------------------------------------------------

class Interrupt0364(Exception):
    """InterruptProcessingException as 0.3.64 defines it."""


class Interrupt038(BaseException):
    """InterruptProcessingException as 0.38 defines it."""


@pytest.mark.parametrize("interrupt", [Interrupt0364, Interrupt038])
def test_cancel_passes_through_patches_and_node_errors_unchanged(interrupt):
    options = guarded_options({"sampler_post_cfg_function": [patch_raising(interrupt())],
                               "sampler_pre_cfg_function": [patch_raising(interrupt())]})
    with pytest.raises(interrupt):
        options["sampler_post_cfg_function"][0](post_cfg_args())
    with pytest.raises(interrupt):
        options["sampler_pre_cfg_function"][0](post_cfg_args())

    @node_errors("CFG Sweep Sampler")
    def cancelled_node():
        raise interrupt()

    with pytest.raises(interrupt):
        cancelled_node()


@pytest.mark.parametrize("interrupt", [Interrupt0364, Interrupt038])
def test_check_interrupt_raises_comfyui_own_exception(comfy_modules, interrupt):
    def throw():
        raise interrupt()

    comfy_modules(model_management=module("comfy.model_management", throw_exception_if_processing_interrupted=throw))
    with pytest.raises(interrupt):
        runtime.check_interrupt()


# ---- latents the sweep does not take -------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_latent_is_refused_before_comfyui_is_touched():
    conditioning = [[torch.zeros(1, 77, 768), {}]]
    nested = torch.nested.nested_tensor([torch.zeros(4, 8, 8), torch.zeros(4, 8, 16)])
    with pytest.raises(LatentLabInputError, match="nested latent"):
        sweep_sampler.sweep_sample(None, conditioning, conditioning, {"samples": nested}, [], 4, "euler", "normal",
                                   1.0)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"),
                                   accelerator_error("CUDA error: out of memory")])
def test_the_probe_names_out_of_memory_in_either_form(comfy_modules, error):
    from latent_lab.adapters.vae_probe import ComfyProbeVAE
    from latent_lab.core.errors import LatentLabInputError
    comfy_modules(model_management=model_management(soft_empty_cache=lambda: None))
    probe = ComfyProbeVAE.__new__(ComfyProbeVAE)
    with pytest.raises(LatentLabInputError, match="Ran out of memory in the decoder pass"):
        with probe.memory_errors_named("decoder pass", (1, 4, 8, 8)):
            raise error
    with pytest.raises(RuntimeError, match="shapes"):  # anything else passes through unchanged
        with probe.memory_errors_named("decoder pass", (1, 4, 8, 8)):
            raise RuntimeError("shapes cannot be multiplied")
