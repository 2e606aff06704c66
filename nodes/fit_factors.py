"""Fit Latent RGB Factors: a linear preview for any VAE, fine-tuned ones included."""
import json
import os

from ..adapters import comfy_objects, folders
from ..adapters.bridge_vae import check_vae
from ..adapters.ui import preview_images
from ..core import factor_fit, preview
from ..core.errors import require
from ..core.factor_files import save_factors
from ..core.formats import FORMATS
from ..core.validate import check_image, check_latent
from .common import CATEGORY, node_errors, ui_result

TARGETS = ("vae_decode", "input_images")


def fit_report_text(report: dict) -> str:
    line = (f"saved {report['file']} · {report['channels']} channels · "
            f"PSNR train {report['train_psnr_db']:.2f} dB, held-out {report['held_out_psnr_db']:.2f} dB")
    if report.get("builtin_psnr_db") is not None:
        line += f" (built-in {report['format']} factors: {report['builtin_psnr_db']:.2f} dB)"
    return line


class FitLatentRGBFactors:
    DESCRIPTION = ("Fits linear latent -> RGB factors to a VAE by least squares: encodes the images, compares the "
                   "latent cells with the images (or the VAE's own decode) averaged to latent resolution, and saves "
                   "the factors in models/latent_rgb/ for the preview, maps and stats nodes.")
    CATEGORY = f"{CATEGORY}/See"
    FUNCTION = "fit"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("report", "preview")
    OUTPUT_TOOLTIPS = ("Fit report as JSON: file, channels, format, target, train and held-out PSNR (dB), "
                       "built-in factors' PSNR where the format is known.",
                       "The fitted linear preview of the images (x8, nearest).")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE to fit factors for."}),
                "images": ("IMAGE", {"tooltip": "Calibration images (varied colors help; 4-16 images of 256-512 px are plenty). The last fifth is held out for the report."}),
                "target": (list(TARGETS), {"default": "vae_decode", "tooltip": "vae_decode: match what this VAE decodes (best for previews). input_images: match the images themselves (no decode; faster)."}),
                "format": (["unknown"] + list(FORMATS), {"default": "unknown", "tooltip": "The format this VAE belongs to, recorded in the file and used to compare with the built-in factors."}),
                "filename": ("STRING", {"default": "my_vae_rgb", "tooltip": "File name in models/latent_rgb/ (.safetensors is added). Letters, digits, spaces, '-', '_', '.'."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of that name."}),
            },
        }

    @node_errors("Fit Latent RGB Factors")
    def fit(self, vae, images, target, format, filename, overwrite):
        check_vae(vae, "vae")
        images = check_image(images)
        require(isinstance(filename, str), "The filename is not text.", "Type a file name.")
        path = folders.output_path("latent_rgb", filename.strip())
        require(overwrite or not os.path.exists(path),
                f"models/latent_rgb/{os.path.basename(path)} already exists.",
                "Choose another filename or turn on overwrite.")
        require(min(images.shape[1:3]) >= 16, f"The images are {images.shape[2]}x{images.shape[1]} pixels.",
                "Use images of at least 64x64 pixels.")
        latents = check_latent(comfy_objects.encode(vae, images))
        height, width = latents.shape[2:]
        reference = comfy_objects.decode(vae, latents) if target == "vae_decode" else images
        targets = factor_fit.area_average(reference, height, width)
        affine, report = factor_fit.fit_factors(latents, targets)
        report.update(file=os.path.basename(path), channels=latents.shape[1], format=format, target=target,
                      builtin_psnr_db=self._builtin_psnr(format, latents, targets))
        save_factors(path, affine, {k: v for k, v in report.items() if v is not None})
        fitted = preview.preview_images(latents, affine, 8)
        return ui_result((json.dumps(report), fitted), text=fit_report_text(report),
                         images=preview_images(fitted, "latentlab_fit"))

    @staticmethod
    def _builtin_psnr(format_key, latents, targets):
        fmt = FORMATS.get(format_key)
        if fmt is None or fmt.channels != latents.shape[1]:
            return None
        return factor_fit.psnr(preview.linear_rgb(latents, fmt.rgb_affine()), targets)


NODES = {"LatentLabFitRGBFactors": (FitLatentRGBFactors, "Fit Latent RGB Factors")}
