"""A ComfyUI VAE as the probe's plain callables.

encode_moments: the encoder and quant_conv called directly, so the log-variance is read BEFORE the
DiagonalGaussian clamp to [-30, 20] (ComfyUI's VAE.encode returns only the clamped posterior's mean).
decode: first_stage_model.decode on a float32 copy of the decoder's weights, made outside inference mode,
so finite differences are not bf16 rounding and autograd can take vector-Jacobian products (ComfyUI runs
nodes under torch.inference_mode, whose weights autograd refuses to save).
Neither ever tiles (VAE.encode/decode fall back to tiles on out-of-memory; tiles make their own spots):
sizes that will not fit are refused up front with a size that will.
"""
import contextlib
import functools
import math

import torch

from ..core.errors import LatentLabInputError, require
from ..core.probe import ProbeVAE
from .comfy_objects import vae_channels, vae_downscale
from .runtime import comfy, free_memory, intermediate_device, is_out_of_memory, soft_empty_cache

MAP_GRAPH_FACTOR = 4.0  # autograd graph of the SD decoder at 256 px: ~2.5x memory_used_decode measured on CPU
ENCODER_PARTS = ("encoder.", "quant_conv.", "taesd_encoder.")


def vae_kind(model) -> str:
    if hasattr(model, "taesd_decoder"):
        return "TAESD"
    if hasattr(model, "encoder") and hasattr(model, "decoder"):
        regularizer = type(getattr(model, "regularization", None)).__name__
        return "KL" if regularizer == "DiagonalGaussianRegularizer" else "AE"
    return "other"


def check_image_vae(vae) -> None:
    require(vae is not None and hasattr(vae, "first_stage_model"),
            "The vae input is not a ComfyUI VAE.", "Connect a Load VAE or a checkpoint loader's VAE output.")
    try:
        vae.throw_exception_if_invalid()
    except RuntimeError as error:
        raise LatentLabInputError(f"The VAE is not usable: {error}".strip(), "Load a VAE file.") from error
    require(getattr(vae, "latent_dim", 2) == 2 and getattr(vae, "output_channels", 3) == 3,
            "This VAE is not a 2-D image VAE (it makes video or audio latents).",
            "Connect an image VAE: SD1.x, SD2.x, SDXL, SD3 or Flux.")
    require(vae_downscale(vae) is not None, "This VAE has no fixed spatial downscale factor.",
            "Connect an image VAE: SD1.x, SD2.x, SDXL, SD3 or Flux.")


def raw_moments(vae, model, kind: str, pixels: torch.Tensor) -> tuple:
    """pixels [1, 3, H, W] in 0..1 on the VAE's device -> (mean, logvar or None), logvar unclamped."""
    x = vae.process_input(pixels).to(vae.vae_dtype).to(vae.device)
    if kind in ("KL", "AE"):
        h = model.encoder(x)
        if getattr(model, "quant_conv", None) is not None:
            h = model.quant_conv(h)
        if kind == "KL" and h.shape[1] == 2 * vae.latent_channels:
            mean, logvar = h.chunk(2, dim=1)
            return mean, logvar
        return h, None
    return model.encode(x), None


class _Decoding(torch.nn.Module):
    """forward = first_stage_model.decode, so torch.func.functional_call can swap in the float32 weights."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        return self.model.decode(z)


class ComfyProbeVAE:
    def __init__(self, vae):
        check_image_vae(vae)
        self.vae = vae
        self.model = vae.first_stage_model
        self.kind = vae_kind(self.model)
        self.downscale = vae_downscale(vae)
        self.channels = vae_channels(vae)
        self.wrapper = _Decoding(self.model)
        self.weights = None
        self.mm = comfy("comfy.model_management")

    # memory ----------------------------------------------------------
    @functools.cached_property
    def decoder_bytes(self) -> int:
        """The decoder's float32 weights (the probe's own copy where the VAE runs in fp16 or bf16)."""
        return sum(p.numel() * 4 for n, p in self.model.named_parameters() if not n.startswith(ENCODER_PARTS))

    def bytes_needed(self, height: int, width: int, mode: str) -> float:
        if mode == "encode":
            return float(self.vae.memory_used_encode((1, 3, height, width), self.vae.vae_dtype))
        latent = (1, self.channels, height // self.downscale, width // self.downscale)
        one = float(self.vae.memory_used_decode(latent, torch.float32))
        return (MAP_GRAPH_FACTOR if mode == "map" else 1.0) * one + self.decoder_bytes

    def room(self, needed: float) -> float:
        """Load the VAE, unloading other models to make `needed` bytes free if it can; free bytes after."""
        if self.mm is None:
            return float("inf")
        self.mm.load_models_gpu([self.vae.patcher], memory_required=needed,
                                force_full_load=getattr(self.vae, "disable_offload", False))
        return free_memory(self.vae.device, self.vae.patcher)

    def out_of_memory(self, what: str, shape) -> LatentLabInputError:
        soft_empty_cache()
        return LatentLabInputError(f"Ran out of memory in the {what} of a {tuple(shape)} tensor; the probe never tiles.",
                                   "Use a smaller image (half the side needs a quarter of the memory) or verify mode.")

    # encode ----------------------------------------------------------
    def encode_moments(self, pixels: torch.Tensor) -> tuple:
        self.room(self.bytes_needed(pixels.shape[2], pixels.shape[3], "encode"))
        with self.memory_errors_named("encoder pass", pixels.shape):
            with torch.no_grad():
                mean, logvar = raw_moments(self.vae, self.model, self.kind, pixels)
        device = intermediate_device()
        return mean.float().to(device), (None if logvar is None else logvar.float().to(device))

    # decode ----------------------------------------------------------
    def float32_weights(self) -> dict:
        if self.weights is None:
            with torch.inference_mode(False):
                named = list(self.wrapper.named_parameters()) + list(self.wrapper.named_buffers())
                self.weights = {n: t.detach().to(self.vae.device, torch.float32, copy=True) for n, t in named
                                if not n[len("model."):].startswith(ENCODER_PARTS) and t.is_floating_point()}
        return self.weights

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw latent [B, C, h, w] -> pixels [B, 3, H, W] in 0..1, unclamped, float32, differentiable."""
        weights = self.float32_weights()
        needed = self.bytes_needed(latent.shape[2] * self.downscale, latent.shape[3] * self.downscale, "verify")
        free = float("inf") if torch.is_grad_enabled() else self.room(needed)
        per_item = needed - self.decoder_bytes  # the weights are needed once, not once per item
        chunk = latent.shape[0] if math.isinf(free) else max(1, int((free - self.decoder_bytes) // per_item))
        parts = []
        with self.memory_errors_named("decoder pass", latent.shape), torch.inference_mode(False):
            for start in range(0, latent.shape[0], chunk):
                z = latent[start:start + chunk].to(self.vae.device, torch.float32)
                out = torch.func.functional_call(self.wrapper, weights, (z,), strict=False)
                parts.append((out.float() + 1.0) / 2.0)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @contextlib.contextmanager
    def memory_errors_named(self, what: str, shape):
        """Out-of-memory, in whatever form this ComfyUI and torch raise it, becomes a message with a fix."""
        try:
            yield
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            raise self.out_of_memory(what, shape) from error

    def notes(self) -> list:
        notes = []
        if self.kind == "TAESD":
            notes.append("TAESD-like VAE: no log-variance output; flags use the mean magnitude only.")
        elif self.kind in ("AE", "other"):
            notes.append(f"{type(self.model).__name__}: no Gaussian log-variance output found; "
                         "flags use the mean magnitude only.")
        if self.vae.vae_dtype != torch.float32:
            notes.append(f"The VAE runs in {str(self.vae.vae_dtype).replace('torch.', '')}; "
                         "the probe decodes with a float32 copy of the decoder.")
        return notes

    def probe_vae(self, tick=None) -> ProbeVAE:
        where = str(self.vae.device)
        return ProbeVAE(encode_moments=self.encode_moments, decode=self.decode, downscale=self.downscale,
                        name=f"{type(self.model).__name__} VAE", notes=self.notes(), max_batch=4,
                        bytes_needed=self.bytes_needed, room=self.room, tick=tick, where=where,
                        channels=self.channels)


def probe_vae(vae, tick=None) -> ProbeVAE:
    return ComfyProbeVAE(vae).probe_vae(tick)
