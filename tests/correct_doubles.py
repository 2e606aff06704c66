"""Test doubles of ComfyUI's sampling objects (not of our code), following ComfyUI 0.3.64:

- ModelPatcher: clone() (deep-copies model_options, copies the wrapper lists), model_options with
  "sampler_post_cfg_function" (a list; set_model_sampler_post_cfg_function appends), wrappers {kind: {key: [fn]}} (add_wrapper_with_key), get_model_object("latent_format").
- The sampling path of comfy/samplers.py: CFGGuider.sample runs the OUTER_SAMPLE wrappers around outer_sample, which
  sets transformer_options["sample_sigmas"]; each model call computes cond/uncond, CFG, then every post-CFG function in
  order with the args dict cfg_function builds; an Euler step then uses the returned denoised.
"""
import copy
import math

import torch


class SD15:
    latent_channels = 4


class SDXL:
    latent_channels = 4


class Flux:
    latent_channels = 16


class ModelSampling:
    """ComfyUI's discrete schedule (1000 betas, scaled-linear), with its percent_to_sigma."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas = torch.cumprod(1 - betas, 0)
        self.sigmas = ((1 - alphas) / alphas) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma(self, timestep: float) -> float:
        t = min(max(timestep, 0.0), 999.0)
        low, high = math.floor(t), math.ceil(t)
        w = t - low
        return math.exp((1 - w) * self.log_sigmas[low].item() + w * self.log_sigmas[high].item())

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma((1.0 - percent) * 999.0)

    def normal_sigmas(self, steps: int) -> torch.Tensor:
        timesteps = torch.linspace(999, 0, steps + 1)[:-1]
        return torch.tensor([self.sigma(float(t)) for t in timesteps] + [0.0], dtype=torch.float32)


class BaseModel:
    def __init__(self):
        self.model_sampling = ModelSampling()


class ModelPatcher:
    def __init__(self, latent_format=SDXL):
        self.latent_format = latent_format()
        self.model = BaseModel()
        self.model_options = {"transformer_options": {}}
        self.wrappers = {}

    def clone(self):
        twin = ModelPatcher.__new__(ModelPatcher)
        twin.latent_format = self.latent_format
        twin.model = self.model
        twin.model_options = copy.deepcopy(self.model_options)
        twin.wrappers = {kind: {key: list(fns) for key, fns in by_key.items()} for kind, by_key in self.wrappers.items()}
        return twin

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_post_cfg_function"] = \
            self.model_options.get("sampler_post_cfg_function", []) + [post_cfg_function]

    def add_wrapper_with_key(self, wrapper_type, key, wrapper):
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def get_model_object(self, name):
        return getattr(self, name) if name == "latent_format" else getattr(self.model, name)


class Executor:
    """comfy.patcher_extension.WrapperExecutor: each wrapper gets the executor of the rest."""

    def __init__(self, original, wrappers, index=0):
        self.original, self.wrappers, self.index = original, wrappers, index

    def __call__(self, *args, **kwargs):
        return Executor(self.original, self.wrappers, self.index + 1).execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        if self.index == len(self.wrappers):
            return self.original(*args, **kwargs)
        return self.wrappers[self.index](self, *args, **kwargs)


def toy_denoiser(x: torch.Tensor, sigma: torch.Tensor, bias: float) -> torch.Tensor:
    """A stand-in x0 prediction with a color cast (bias) and outliers that grow with sigma."""
    s = sigma.view(-1, 1, 1, 1)
    return torch.tanh(x / (1 + s)) * 6 + bias + 0.1 * s * torch.sign(x)


def post_cfg_args(patcher, denoised, cond, uncond, cfg, sigma, x, model_options):
    return {"denoised": denoised, "cond": None, "uncond": None, "cond_scale": cfg, "model": patcher.model,
            "uncond_denoised": uncond, "cond_denoised": cond, "sigma": sigma, "model_options": model_options, "input": x}


def sample(patcher: ModelPatcher, noise: torch.Tensor, sigmas: torch.Tensor, cfg: float = 5.0,
           latent_image: torch.Tensor | None = None) -> torch.Tensor:
    """Euler sampling the way ComfyUI wires it: wrappers, sample_sigmas, CFG, post-CFG chain."""
    model_options = {k: (v.copy() if isinstance(v, dict) else v) for k, v in patcher.model_options.items()}
    model_options["transformer_options"] = {**model_options.get("transformer_options", {}), "sample_sigmas": sigmas}
    latent_image = torch.zeros_like(noise) if latent_image is None else latent_image

    def outer_sample(noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        x = latent_image + noise * sigmas[0]
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i].expand(x.shape[0])
            cond, uncond = toy_denoiser(x, sigma, 0.8), toy_denoiser(x, sigma, 0.3)
            denoised = uncond + (cond - uncond) * cfg
            for fn in model_options.get("sampler_post_cfg_function", []):
                denoised = fn(post_cfg_args(patcher, denoised, cond, uncond, cfg, sigma, x, model_options))
            x = denoised + (x - denoised) * (sigmas[i + 1] / sigmas[i])
        return x

    wrappers = [w for by_key in patcher.wrappers.get("outer_sample", {}).values() for w in by_key]
    return Executor(outer_sample, wrappers).execute(noise, latent_image, None, sigmas)
