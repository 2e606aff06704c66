"""A CFG sweep as one batched sampling loop, built from ComfyUI's own KSampler pieces.

What a cell gets is what a batch-1 KSampler with that cell's seed and CFG gets:
- the same sigmas (comfy.samplers.KSampler with the same steps, scheduler, sampler and denoise),
- the same starting noise (comfy.sample.prepare_noise on the batch-1 latent with the cell's seed),
- the same CFG arithmetic (comfy.samplers.cfg_function with a per-cell scale, pre-CFG patches first),
- no unconditional pass at CFG 1 (unless a patch or sampler disables that optimization),
- for ancestral and SDE samplers the same per-step noise: one generator (or Brownian tree) per cell,
  seeded with the cell's seed, drawing batch-1 noise, as default_noise_sampler / BrownianTreeNoiseSampler
  do in a batch-1 run.
Cells whose model input is bitwise identical (same seed and guidance, before their CFG makes them differ: the
first step) are evaluated once and share the result.
A guidance axis (guidance-distilled models: Flux.1-dev, HunyuanVideo...) gives each cell the guidance a
FluxGuidance node in front of KSampler's positive input would: the positive conditioning carries a guidance,
and a model_function_wrapper puts each cell's own value into the positive rows of every batched model call
(ComfyUI builds c["guidance"] from the conditioning, one value per row, rows grouped per cond entry).
A sampler the sweep has not classified (one added to ComfyUI after the lists below were checked) runs each cell
alone, with the sampler's own noise: exactly a separate KSampler run, in any model_batch mode.
"""
import inspect
from functools import lru_cache

import torch

from ..core import sweep_cfg
from ..core.errors import LatentLabInputError, require
from ..core.sweep_plan import chunk_capacity, plan_chunks, state_bytes_per_cell
from .runtime import check_interrupt, comfy, free_memory, intermediate_device, is_out_of_memory, streams_weights

# Samplers whose default noise comes from a torchsde Brownian tree (value: tree kept on the CPU).
BROWNIAN_SAMPLERS = {
    "dpmpp_sde": True, "dpmpp_sde_gpu": False,
    "dpmpp_2m_sde": True, "dpmpp_2m_sde_gpu": False,
    "dpmpp_2m_sde_heun": True, "dpmpp_2m_sde_heun_gpu": False,
    "dpmpp_3m_sde": True, "dpmpp_3m_sde_gpu": False,
}
# Samplers that couple batch items: dpm_adaptive picks its step size from an error norm over the whole
# batch, so cells sampled together would not match separate runs. They run one cell per chunk.
BATCH_COUPLED_SAMPLERS = {"dpm_adaptive"}
# Samplers whose per-step noise comes from default_noise_sampler (seeded by extra_args["seed"]), or that take no
# step noise at all: a per-cell generator, or nothing, reproduces their separate runs. With the two sets above
# these are the samplers the sweep classifies (every sampler of ComfyUI 0.3.64).
GENERATOR_SAMPLERS = {
    "euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "ddpm", "lcm", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece"}
NOISELESS_SAMPLERS = {
    "euler", "euler_cfg_pp", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpmpp_2m", "dpmpp_2m_cfg_pp", "ipndm",
    "ipndm_v", "deis", "gradient_estimation", "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2"}
CLASSIFIED_SAMPLERS = frozenset(BROWNIAN_SAMPLERS) | BATCH_COUPLED_SAMPLERS | GENERATOR_SAMPLERS | NOISELESS_SAMPLERS
# The keys a LATENT may carry to size an empty latent for its model (comfy.sample.fix_empty_latent_channels takes
# them as parameters of the same names where it knows them); a sampled latent no longer needs them.
DOWNSCALE_KEYS = ("downscale_ratio_spacial", "downscale_ratio_temporal")
PATCH_SLOTS = {
    "sampler_pre_cfg_function": "pre-CFG function",
    "sampler_cfg_function": "CFG function",
    "sampler_post_cfg_function": "post-CFG function",
}


# ComfyUI's lists (v0.3.64), only for the node's inputs outside ComfyUI (tests, workflow checks); inside it, its own.
KNOWN_SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
KNOWN_SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"]


def sampler_names() -> list:
    samplers = comfy("comfy.samplers")
    return list(samplers.KSampler.SAMPLERS) if samplers is not None else list(KNOWN_SAMPLERS)


def scheduler_names() -> list:
    samplers = comfy("comfy.samplers")
    return list(samplers.KSampler.SCHEDULERS) if samplers is not None else list(KNOWN_SCHEDULERS)


def is_classified(sampler_name: str) -> bool:
    return sampler_name in CLASSIFIED_SAMPLERS


def noise_kind(sampler_name: str) -> str:
    if not is_classified(sampler_name):
        return "the sampler's own, one cell at a time (a sampler the sweep does not classify)"
    if sampler_name in BATCH_COUPLED_SAMPLERS:
        return "batch-coupled step size: one cell per chunk"
    function = _sampler_function(sampler_name)
    if function is not None and "noise_sampler" in inspect.signature(function).parameters:
        return "per-cell Brownian tree" if sampler_name in BROWNIAN_SAMPLERS else "per-cell generator"
    return "none after the start"


def _sampler_function(sampler_name: str):
    samplers = comfy("comfy.samplers")
    if samplers is None or sampler_name not in samplers.KSampler.SAMPLERS:
        return None
    return samplers.sampler_object(sampler_name).sampler_function


class PatchScaleError(LatentLabInputError):
    """A model patch that failed when given one CFG scale per cell."""


def describe(function) -> str:
    target = getattr(function, "__func__", function)
    if not inspect.isfunction(target) and not inspect.ismethod(target):
        target = type(function)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _guarded(function, slot: str):
    """Runs a patch with a per-cell scale tensor; a patch that needs one number fails with our message."""
    def call(args):
        try:
            result = function(args)
        except LatentLabInputError:  # not the scale's fault; keeps its own message
            raise
        except (TypeError, ValueError, RuntimeError) as error:
            if is_out_of_memory(error):  # nor is running out of memory
                raise
            raise PatchScaleError(
                f"The model patch {describe(function)} ({PATCH_SLOTS[slot]}) failed when given one CFG scale "
                f"per cell ({type(error).__name__}: {error}).",
                "A sweep passes CFG as a tensor with one value per cell; patches that need a single number "
                "(for example ones that compare cond_scale or call float() on it) cannot run in a batched sweep. "
                "Remove the patch from the model, or sweep with separate KSampler runs.") from error
        _check_shape(result, args, function, slot)
        return result
    return call


def _check_shape(result, args, function, slot: str) -> None:
    expected = args["input"].shape
    # a pre-CFG patch returns [cond, uncond], and uncond is None when no cell needs it (every CFG 1)
    shapes = [r.shape for r in result if r is not None] if slot == "sampler_pre_cfg_function" else [result.shape]
    if any(s != expected for s in shapes):
        raise PatchScaleError(
            f"The model patch {describe(function)} ({PATCH_SLOTS[slot]}) returned shape "
            f"{[tuple(s) for s in shapes]} for a per-cell CFG scale; the batch is {tuple(expected)}.",
            "The patch does not keep one result per cell with a per-cell scale: remove it for sweeps.")


def guarded_options(model_options: dict) -> dict:
    options = dict(model_options)
    for slot in PATCH_SLOTS:
        if slot not in options:
            continue
        value = options[slot]
        options[slot] = [_guarded(f, slot) for f in value] if isinstance(value, list) else _guarded(value, slot)
    return options


def combine_cfg(model, x, timestep, cond_pred, uncond_pred, needs, scales, positive, negative, model_options):
    """sampling_function's tail (pre-CFG patches, cfg_function) with a float or per-cell tensor scale."""
    samplers = comfy("comfy.samplers")
    scale = sweep_cfg.cfg_scale(scales, x)
    options = guarded_options(model_options) if isinstance(scale, torch.Tensor) else model_options
    uncond = negative if any(needs) else None
    conds = [positive, uncond]
    out = [cond_pred, uncond_pred]
    for function in options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": out, "cond_scale": scale, "timestep": timestep,
                "input": x, "sigma": timestep, "model": model, "model_options": options}
        out = function(args)
    return samplers.cfg_function(model, out[0], out[1], scale, x, timestep, model_options=options,
                                 cond=positive, uncond=uncond)


def evaluate_conds(model, conds: list, x, timestep, model_options) -> list:
    samplers = comfy("comfy.samplers")
    if "sampler_calc_cond_batch_function" in model_options:
        args = {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        return model_options["sampler_calc_cond_batch_function"](args)
    return samplers.calc_cond_batch(model, conds, x, timestep, model_options)


@lru_cache(maxsize=None)
def guider_class():
    samplers = comfy("comfy.samplers")

    class SweepGuider(samplers.CFGGuider):
        """CFGGuider with one CFG scale per batch item (cell), and shared evaluation of identical inputs."""

        def set_cells(self, scales: list, groups: list, per_cell: bool = False, guidances: list | None = None):
            """groups: cells that may share a model evaluation when their inputs are identical (same seed and
            guidance).

            per_cell: evaluate the model one cell at a time, in the batch a batch-1 KSampler uses, so each
            cell is bitwise equal to a separate run; unit-scale cells then only share with each other.
            guidances: each cell's guidance (None: the conditioning's own).
            """
            self.scales = [float(s) for s in scales]
            self.guidances = None if guidances is None else torch.tensor([float(g) for g in guidances],
                                                                         dtype=torch.float32)
            self.per_cell = per_cell
            self.groups = [(g, sweep_cfg.is_unit_scale(s)) for g, s in zip(groups, self.scales)] if per_cell \
                else list(groups)
            self.stats = {}

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            check_interrupt()
            require(x.shape[0] == len(self.scales),
                    f"The sampler passed {x.shape[0]} items for {len(self.scales)} sweep cells.")
            positive, negative = self.conds.get("positive"), self.conds.get("negative")
            skip_unit = not model_options.get("disable_cfg1_optimization", False)

            def options_for(cells):
                if self.guidances is None:
                    return model_options
                return guidance_options(model_options, self.guidances[cells.cpu()])

            def evaluate(rows, step, with_uncond, cells):
                conds = [positive, negative if with_uncond else None]
                if not self.per_cell:
                    out = evaluate_conds(self.inner_model, conds, rows, step, options_for(cells))
                    return out[0], (out[1] if with_uncond else None)
                outs = []
                for i in range(rows.shape[0]):
                    check_interrupt()
                    outs.append(evaluate_conds(self.inner_model, conds, rows[i:i + 1],
                                               step[i:i + 1] if step.ndim > 0 else step, options_for(cells[i:i + 1])))
                return torch.cat([o[0] for o in outs]), (torch.cat([o[1] for o in outs]) if with_uncond else None)

            def combine(cond, uncond, needs):
                return combine_cfg(self.inner_model, x, timestep, cond, uncond, needs, self.scales,
                                   positive, negative, model_options)

            return sweep_cfg.guided_prediction(x, timestep, self.scales, self.groups, evaluate, combine,
                                               skip_unit, self.stats)

    return SweepGuider


class CellNoise:
    """default_noise_sampler for each cell: one generator per seed on x's device, batch-1 draws."""

    def __init__(self, x: torch.Tensor, seeds: list):
        unique = list(dict.fromkeys(seeds))
        self.shape = (1,) + tuple(x.shape[1:])
        self.like = dict(dtype=x.dtype, layout=x.layout, device=x.device)
        self.generators = [torch.Generator(device=x.device).manual_seed(seed) for seed in unique]
        self.index = torch.tensor([unique.index(s) for s in seeds], device=x.device)

    def __call__(self, sigma, sigma_next):
        draws = [torch.randn(self.shape, generator=g, **self.like) for g in self.generators]
        return torch.cat(draws)[self.index]


def cell_noise_sampler(sampler_name: str, x: torch.Tensor, sigmas: torch.Tensor, seeds: list):
    if sampler_name in BROWNIAN_SAMPLERS:
        sampling = comfy("comfy.k_diffusion.sampling")
        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        return sampling.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=list(seeds),
                                                 cpu=BROWNIAN_SAMPLERS[sampler_name])
    return CellNoise(x, seeds)


def inpaint_noise(x: torch.Tensor, seeds: list) -> torch.Tensor:
    """KSAMPLER's 'random' inpaint noise (ddim) per cell: CPU generator seeded with seed + 1."""
    shape = (1,) + tuple(x.shape[1:])
    by_seed = {s: torch.randn(shape, generator=torch.Generator().manual_seed(s + 1), device="cpu")
               for s in dict.fromkeys(seeds)}
    return torch.cat([by_seed[s] for s in seeds]).to(x.dtype).to(x.device)


def sampler_for(sampler_name: str, seeds: list):
    """A classified sampler with per-cell noise; any other exactly as KSampler makes it (it samples one cell)."""
    if is_classified(sampler_name):
        return cell_sampler(sampler_name, seeds)
    return comfy("comfy.samplers").sampler_object(sampler_name)


def cell_sampler(sampler_name: str, seeds: list):
    """comfy.samplers.sampler_object(name), with every source of per-step noise made per cell."""
    samplers = comfy("comfy.samplers")
    sampler = samplers.sampler_object(sampler_name)
    function = sampler.sampler_function
    takes_noise_sampler = "noise_sampler" in inspect.signature(function).parameters
    random_inpaint = sampler.inpaint_options.get("random", False)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        if takes_noise_sampler and options.get("noise_sampler") is None:
            options["noise_sampler"] = cell_noise_sampler(sampler_name, x, sigmas, seeds)
        if random_inpaint and (extra_args or {}).get("denoise_mask") is not None:
            model.noise = inpaint_noise(x, seeds)
        return function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)

    sampler.sampler_function = sample
    return sampler


def check_conditioning(conditioning, name: str) -> None:
    require(isinstance(conditioning, list) and len(conditioning) > 0,
            f"The {name} input is not a ComfyUI CONDITIONING.", "Connect a CLIP Text Encode output.")
    for entry in conditioning:
        tensor = entry[0] if isinstance(entry, (list, tuple)) and entry else None
        if isinstance(tensor, torch.Tensor) and tensor.ndim >= 1:
            require(tensor.shape[0] == 1,
                    f"The {name} conditioning holds a batch of {tensor.shape[0]} prompts.",
                    "A sweep varies CFG and seed over one prompt: use conditioning with a single prompt.")


MODEL_PARTS = ("clone", "get_model_object", "load_device", "model", "model_options")


def has_guidance_input(model) -> bool:
    """Whether the diffusion model embeds a guidance value. ComfyUI's detection records it as guidance_embed
    (read off the checkpoint's guidance_in weights) in the model's parameters and unet config."""
    params = getattr(model.get_model_object("diffusion_model"), "params", None)
    if hasattr(params, "guidance_embed"):
        return bool(params.guidance_embed)
    config = getattr(getattr(model.model, "model_config", None), "unet_config", None)
    return isinstance(config, dict) and bool(config.get("guidance_embed", False))


def check_guidance_model(model) -> None:
    require(has_guidance_input(model),
            f"The model ({type(model.model).__name__}) has no guidance input, so a guidance list has nothing to "
            "change: only guidance-distilled models (Flux.1-dev, HunyuanVideo...) read the guidance a FluxGuidance "
            "node writes.",
            "Leave guidance_values empty and sweep CFG (cfg_values) for this model.")


def with_guidance(conditioning: list, guidance: float) -> list:
    """The conditioning as FluxGuidance(guidance) returns it (a copy; the input is left as it is)."""
    return comfy("node_helpers").conditioning_set_values(conditioning, {"guidance": float(guidance)})


def row_guidance(current, cond_or_uncond: list, values: torch.Tensor):
    """c["guidance"] with each positive row given its cell's value. Rows come in one block of len(values) per
    entry of cond_or_uncond (0 marks the positive prompt's entries); the negative's rows keep their own."""
    if 0 not in cond_or_uncond:
        return current
    rows = len(values) * len(cond_or_uncond)
    require(isinstance(current, torch.Tensor) and current.ndim == 1 and current.shape[0] == rows,
            f"The model call got guidance {_shape_text(current)} for {rows} rows; the sweep cannot give each "
            "cell its own guidance with this model.", "Leave guidance_values empty for this model.")
    out = current.clone()
    for block, entry in enumerate(cond_or_uncond):
        if entry == 0:
            out[block * len(values):(block + 1) * len(values)] = values.to(out)
    return out


def _shape_text(value) -> str:
    return f"of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def guidance_options(model_options: dict, values: torch.Tensor) -> dict:
    """model_options with a model_function_wrapper that feeds each row its cell's guidance (values, one per cell
    of the call), then calls the wrapper that was there (one slot: it is chained, not replaced)."""
    inner = model_options.get("model_function_wrapper")

    def wrapper(apply_model, args):
        c = dict(args["c"])
        c["guidance"] = row_guidance(c.get("guidance"), args["cond_or_uncond"], values)
        args = {**args, "c": c}
        if inner is not None:
            return inner(apply_model, args)
        return apply_model(args["input"], args["timestep"], **c)
    return {**model_options, "model_function_wrapper": wrapper}


def check_model(model) -> None:
    """Refuses anything but a ComfyUI MODEL (a ModelPatcher) before ComfyUI is asked to sample with it."""
    require(all(hasattr(model, part) for part in MODEL_PARTS),
            "The model input is not a ComfyUI MODEL.", "Connect a MODEL output (Load Checkpoint...).")


def check_inputs(model, positive, negative, latent: dict | None = None) -> None:
    """What the sweep refuses before ComfyUI is touched: conditioning, a nested latent, anything but a MODEL."""
    check_conditioning(positive, "positive")
    check_conditioning(negative, "negative")
    if latent is not None:
        require(not getattr(latent.get("samples"), "is_nested", False),
                "The latent_image is a nested latent (several latents in one, such as video with audio).",
                "A sweep takes one plain image latent; sweep such models with separate KSampler runs.")
    check_model(model)


def free_memory_for_cells(model) -> float:
    """Free bytes for cells, before the model is loaded: less what the model still needs resident on a GPU (nothing
    when it streams its weights)."""
    device = model.load_device
    free = free_memory(device, model)
    if getattr(device, "type", "cpu") != "cpu" and not streams_weights(model):
        free -= max(0, model.model_size() - model.loaded_size())
    return max(0.0, float(free))


def fitted_latent(model, latent: dict) -> torch.Tensor:
    """comfy.sample.fix_empty_latent_channels as KSampler calls it: with the latent's downscale ratios where the
    function takes them (ComfyUI resizes an empty latent made for another ratio), without them where it does not."""
    fix = comfy("comfy.sample").fix_empty_latent_channels
    parameters = inspect.signature(fix).parameters
    ratios = {key: latent.get(key) for key in DOWNSCALE_KEYS if key in parameters}
    return fix(model, latent["samples"], **ratios)


def bytes_per_cell(model, latent_image: torch.Tensor) -> float:
    """ComfyUI's own estimate for a cond+uncond pair (x1.5, as calc_cond_batch uses), plus sampler state."""
    pair = model.model.memory_required([2] + list(latent_image.shape[1:]))
    return pair * 1.5 + state_bytes_per_cell(latent_image[0].numel(), latent_image.element_size())


class SweepProgress:
    """One progress bar over every step of every chunk, with KSampler's live preview of the first item."""

    def __init__(self, model, steps: int, chunks: int):
        utils, previews = comfy("comfy.utils"), comfy("latent_preview")
        self.steps, self.total = steps, max(1, steps * chunks)
        self.bar = utils.ProgressBar(self.total)
        self.previewer = previews.get_previewer(model.load_device, model.model.latent_format) if previews else None

    def callback(self, chunk: int):
        offset = chunk * self.steps

        def step(index, x0, x, total_steps):
            check_interrupt()
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
            self.bar.update_absolute(min(offset + index + 1, self.total), self.total, preview)
        return step


def per_cell_batches(model, auto: bool, exact: bool, sampler_name: str | None = None) -> bool:
    """Whether to evaluate cells one at a time. auto: on a CPU, where one cell at a time keeps every cell bitwise
    equal to its separate run for part of batching's speed-up (benchmarks/README.md: 0.89x against 0.65x).
    A sampler the sweep does not classify always runs per cell, whatever was asked."""
    if sampler_name is not None and not is_classified(sampler_name):
        return True
    return exact or auto and torch.device(model.load_device).type == "cpu"


def per_cell_note(sampler_name: str) -> str:
    if is_classified(sampler_name):
        return ""
    return (f"sampler '{sampler_name}' is not one the sweep classifies, so each cell ran alone with the sampler's "
            "own noise, as a separate KSampler run (whatever model_batch asked)")


SEEDED_COND_METHODS = ("extra_conds", "encode_adm", "concat_cond")


def seeded_conds(model, positive, negative) -> str:
    """Why the model's extra conditioning depends on the sampling seed ('' when it does not). ComfyUI hands one seed
    to a whole batch, so cells of different seeds cannot share a chunk there. Found by feature: a model class
    whose extra-conds methods read a "seed" argument (SD_X4Upscaler's noise augmentation, unCLIP, HunyuanImage
    2.1's refiner), or unCLIP conditioning (noise-augmented with the seed by the SDXL/SD2 unCLIP path)."""
    for klass in type(model.model).__mro__:
        for name in SEEDED_COND_METHODS:
            code = getattr(klass.__dict__.get(name), "__code__", None)
            if code is not None and "seed" in code.co_consts:
                return f"{klass.__name__}.{name} reads the seed"
    if any(isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict)
           and entry[1].get("unclip_conditioning") for entry in list(positive) + list(negative)):
        return "unCLIP conditioning is noise-augmented with the seed"
    return ""


def plan_cell_chunks(cells: list, capacity: int, one_seed_per_chunk: bool) -> list:
    groups = [(cell.seed, cell.guidance) for cell in cells]
    if not one_seed_per_chunk:
        return plan_chunks(groups, capacity)
    chunks = []
    for seed in dict.fromkeys(cell.seed for cell in cells):
        members = [i for i, cell in enumerate(cells) if cell.seed == seed]
        chunks += [[members[j] for j in chunk] for chunk in plan_chunks([groups[i] for i in members], capacity)]
    return chunks


def sweep_sample(model, positive, negative, latent: dict, cells: list, steps: int, sampler_name: str,
                 scheduler: str, denoise: float, max_batch: int = 0, per_cell: bool = False) -> tuple:
    """Sample every cell; returns (raw samples [N, C, ...] on the intermediate device, run info dict). Cells with a
    guidance (not None) get it as a FluxGuidance node on the positive conditioning would give it."""
    check_inputs(model, positive, negative, latent)
    guidances = [cell.guidance for cell in cells]
    with_axis = any(g is not None for g in guidances)
    if with_axis:
        check_guidance_model(model)
        positive = with_guidance(positive, guidances[0])
    comfy_sample, samplers, utils = comfy("comfy.sample"), comfy("comfy.samplers"), comfy("comfy.utils")
    latent_image = fitted_latent(model, latent)
    batch_index = latent.get("batch_index")
    noise = {seed: comfy_sample.prepare_noise(latent_image, seed, batch_index)
             for seed in dict.fromkeys(cell.seed for cell in cells)}
    noise_mask = latent.get("noise_mask")
    if noise_mask is not None:
        noise_mask = utils.reshape_mask(noise_mask, latent_image.shape)

    sigmas = samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                               scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    classified = is_classified(sampler_name)
    per_cell = per_cell or not classified
    alone = not classified or sampler_name in BATCH_COUPLED_SAMPLERS
    capacity = 1 if alone else \
        chunk_capacity(free_memory_for_cells(model), bytes_per_cell(model, latent_image), max_batch)
    seeded = seeded_conds(model, positive, negative)
    chunks = plan_cell_chunks(cells, capacity, bool(seeded))
    steps_run = max(0, len(sigmas) - 1)  # denoise 0 gives no sigmas: the latent comes back as it is
    progress = SweepProgress(model, steps_run, len(chunks))

    outputs, stats = [], {}
    for number, chunk in enumerate(chunks):
        members = [cells[i] for i in chunk]
        seeds = [cell.seed for cell in members]
        guider = guider_class()(model)
        guider.set_conds(positive, negative)
        guider.set_cells([cell.cfg for cell in members], [(cell.seed, cell.guidance) for cell in members], per_cell,
                         [cell.guidance for cell in members] if with_axis else None)
        start = latent_image.repeat(len(members), *[1] * (latent_image.ndim - 1))
        samples = guider.sample(torch.cat([noise[s] for s in seeds]), start,
                                sampler_for(sampler_name, seeds), sigmas, denoise_mask=noise_mask,
                                callback=progress.callback(number), disable_pbar=not utils.PROGRESS_BAR_ENABLED,
                                seed=seeds[0])
        outputs.append(samples.to(intermediate_device()))
        for key, value in guider.stats.items():
            stats[key] = stats.get(key, 0) + value
    return torch.cat(outputs), run_info(chunks, stats, sampler_name, steps_run, per_cell, seeded)


def run_info(chunks: list, stats: dict, sampler_name: str, steps_run: int, per_cell: bool = False,
             seeded: str = "") -> dict:
    evaluated = stats.get("cond_rows", 0) + stats.get("uncond_rows", 0)
    separate = stats.get("cell_evaluations", 0)
    return {
        "chunks": [len(c) for c in chunks],
        "chunk_note": (f"the model's extra conditioning depends on the seed ({seeded}), so each chunk holds one "
                       "seed's cells") if seeded else "",
        "model_batch": "per cell" if per_cell else "all cells",
        "model_batch_note": per_cell_note(sampler_name),
        "steps_run": steps_run,
        "model_calls": stats.get("calls", 0),
        "rows_evaluated": evaluated,
        "rows_separate_runs": separate,
        "rows_shared": separate - evaluated,
        "noise": noise_kind(sampler_name),
    }
