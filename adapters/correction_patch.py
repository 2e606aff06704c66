"""Correction and trajectory recording as ComfyUI MODEL patches on the x0 (denoised) prediction.

Both are post-CFG functions: ComfyUI calls them inside every model call, after CFG and any sampler_cfg_function,
in the order they were added, and the sampler then uses what they return. So they act with every sampler (Euler
included, unlike preview-callback hooks), chain with other post-CFG patches and leave the single CFG-function
slot free.
"""
import torch

from ..core.correct_ops import FloatRangeError
from ..core.correct_schedule import apply_schedule
from ..core.sampling_progress import model_progress, run_progress
from ..core.trajectory import Trajectory
from ..core.validate import all_finite
from .runtime import comfy

TIMELINES = ("run", "model")
TRAJECTORY_KEY = "latent_lab_trajectory"


def _sigmas_of(args) -> list:
    sigma = args["sigma"]
    values = sigma.flatten().tolist() if isinstance(sigma, torch.Tensor) else [float(sigma)]
    count = args["denoised"].shape[0]
    return values * count if len(values) == 1 else values[:count]


class ProgressClock:
    """Where a model call sits, in percent: of this run's sigmas, or of the model's whole noise range.

    "run" reads transformer_options["sample_sigmas"], which ComfyUI's CFGGuider sets to the sigmas of the run
    actually sampled, so img2img (denoise < 1) and KSamplerAdvanced step ranges start at 0% and end at 100%.
    "model" uses model_sampling.percent_to_sigma, ComfyUI's own timeline for ControlNet and hook windows, so a
    base + refiner split shares one timeline. Without sample_sigmas (a sampler run outside CFGGuider) "run" falls
    back to "model".
    """

    def __init__(self, timeline: str = "run"):
        self.timeline = timeline
        self._model_cache = {}
        self._run = (None, [])  # the last run's sigmas tensor and their values on the host

    def percents(self, args) -> tuple:
        sigmas = _sigmas_of(args)
        run_sigmas = args.get("model_options", {}).get("transformer_options", {}).get("sample_sigmas")
        if self.timeline == "run" and run_sigmas is not None:
            if self._run[0] is not run_sigmas:  # one host copy per run, not per model call
                self._run = (run_sigmas, run_sigmas.flatten().tolist())
            return sigmas, [100 * run_progress(s, self._run[1]) for s in sigmas]
        return sigmas, [100 * self._model_progress(args["model"], s) for s in sigmas]

    def _model_progress(self, model, sigma: float) -> float:
        key = (id(model), sigma)
        if key not in self._model_cache:
            if len(self._model_cache) > 4096:
                self._model_cache.clear()
            self._model_cache[key] = model_progress(sigma, model.model_sampling.percent_to_sigma)
        return self._model_cache[key]


class CorrectionPatch:
    """post-CFG function: runs a compiled schedule (core.correct_schedule.compile_schedule) on each call's x0."""

    def __init__(self, steps: tuple, strength: float = 1.0, timeline: str = "run"):
        self.steps = steps
        self.strength = strength
        self.clock = ProgressClock(timeline)
        self.idle = strength == 0 or not any(step.op.strength for step in steps)

    def __call__(self, args) -> torch.Tensor:
        denoised = args["denoised"]
        if self.idle:
            return denoised
        _, percents = self.clock.percents(args)
        if not any(step.op.active(p) for step in self.steps for p in percents):
            return denoised
        # A NaN would spread through every mean: a broken prediction passes as it is, and so does one the
        # corrections would carry past the float range (values near ±3e38), rather than stopping the run.
        if not all_finite(denoised):
            return denoised
        try:
            return apply_schedule(denoised, self.steps, percents, self.strength)
        except FloatRangeError:
            return denoised


def correction_model(model, steps: tuple, strength: float = 1.0, timeline: str = "run"):
    """A clone of the ModelPatcher with the correction appended to its post-CFG functions."""
    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(CorrectionPatch(steps, strength, timeline))
    return patched


class TrajectoryPatch:
    """post-CFG function that records each call's x0 unchanged, plus an OUTER_SAMPLE wrapper marking runs."""

    def __init__(self, trajectory: Trajectory, timeline: str = "run"):
        self.trajectory = trajectory
        self.clock = ProgressClock(timeline)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone deep-copies model_options (ComfyUI 0.3.64), so without this every node that clones the
        # model downstream (Latent Correction, a second recorder, a LoRA loader) would leave the sampler recording
        # into a copy of the record, and the record this node returned would stay empty.
        return self

    def __call__(self, args) -> torch.Tensor:
        denoised = args["denoised"]
        sigmas, percents = self.clock.percents(args)
        self.trajectory.record(denoised, sigmas, percents)
        return denoised

    def outer_sample(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        self.trajectory.begin_run(sigmas.flatten().tolist())
        output = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        self.trajectory.end_run(output)
        return output


def _outer_sample_kind() -> str:
    extension = comfy("comfy.patcher_extension")
    return extension.WrappersMP.OUTER_SAMPLE if extension is not None else "outer_sample"


def trajectory_model(model, trajectory: Trajectory, timeline: str = "run"):
    """A clone of the ModelPatcher that fills `trajectory` whenever it samples."""
    patch = TrajectoryPatch(trajectory, timeline)
    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(patch)
    # One key per record, so two recorders on one model (before and after a correction) both see every run.
    patched.add_wrapper_with_key(_outer_sample_kind(), f"{TRAJECTORY_KEY}_{id(trajectory)}", patch.outer_sample)
    return patched
