"""Bridge: move a latent between formats (SD1.5 <-> SDXL): VAE round trip, a fitted bridge file, or an approximation."""
import os

import torch

from ..adapters import bridge_vae, comfy_objects, folders
from ..adapters.runtime import Progress, check_interrupt, intermediate_device, torch_device
from ..adapters.ui import preview_images
from ..core import bridge as bridges
from ..core import calibration
from ..core.bridge_files import describe, inspect_bridge, load_bridge, save_bridge
from ..core.errors import LatentLabInputError, require
from ..core.formats import FORMAT_CHOICES, FORMATS, LATENT_FORMAT_KEY, resolve_format
from ..core.validate import check_image, check_latent, excerpt
from .common import CATEGORY, json_text, node_errors, samples_of, ui_result, with_samples

METHODS = ("approximate", "fitted", "vae_roundtrip")
NO_FILE = "none"
BRIDGE_TAG = "latent_lab_bridge"  # where a bridged LATENT came from
FIT_HINT = ("Make one with the Fit Latent Bridge node (two VAEs; it needs no images), "
            "which saves it in models/latent_bridges/.")


def bridge_choices() -> list:
    return [NO_FILE] + folders.list_files("latent_bridges")


def load_named(name: str):
    return folders.load_named("latent_bridges", name, FIT_HINT, load_bridge)


def check_named(name: str) -> None:
    """The file's header alone (kind, formats, architecture, sizes, tensor shapes): enough for an input check on
    ComfyUI's event loop, where reading tensors or building the bridge would hold up every other client."""
    inspect_bridge(folders.resolve("latent_bridges", name, FIT_HINT))


class LatentBridge:
    DESCRIPTION = ("Moves a LATENT from one format to another (SD1.5 <-> SDXL). vae_roundtrip: decode with the "
                   "source VAE, encode with the target VAE (the reference; slow). fitted: a bridge file from "
                   "models/latent_bridges/ (fast; made by Fit Latent Bridge). approximate: from the formats' linear "
                   "RGB factors, no file and no VAE (colors only; follow with img2img at denoise 0.4 or more). "
                   "Output: raw latent values of the target format.")
    CATEGORY = f"{CATEGORY}/Bridge"
    FUNCTION = "bridge"
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("latent", "info")
    OUTPUT_TOOLTIPS = ("The latent in the target format's raw units, every batch item, tagged with its format "
                       "and with where it came from (method, formats, file).",
                       "What was done: method, direction and, for a fitted file, its fit report.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "The latent to move (raw values, as every LATENT holds; all batch items)."}),
                "method": (list(METHODS), {"default": "approximate", "tooltip": "vae_roundtrip: exact up to the two VAEs' reconstruction loss, needs both VAEs. fitted: a bridge file, fast. approximate: no file, no VAE; colors only, follow with img2img at denoise >= 0.4."}),
                "source_format": (list(FORMAT_CHOICES), {"default": "sdxl", "tooltip": "Format of the incoming latent. auto: from a Latent Lab tag on the LATENT (or the bridge file with method fitted)."}),
                "target_format": (list(FORMATS), {"default": "sd15", "tooltip": "Format to produce; the output is in its raw units."}),
                "bridge_file": (bridge_choices(), {"default": NO_FILE, "tooltip": "For method fitted: a bridge file from models/latent_bridges/ made by Fit Latent Bridge, for this direction."}),
                "tile_size": ("INT", {"default": 512, "min": 0, "max": 4096, "step": 32, "tooltip": "For vae_roundtrip: images larger than this many pixels on a side are decoded and encoded in tiles (saves memory). 0: never tile."}),
                "overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 32, "tooltip": "For vae_roundtrip: pixels shared by neighboring tiles (at most a quarter of the tile)."}),
            },
            "optional": {
                "source_vae": ("VAE", {"tooltip": "For vae_roundtrip: the VAE of the model that made the latent."}),
                "target_vae": ("VAE", {"tooltip": "For vae_roundtrip: the VAE of the model that will use the latent."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, method, bridge_file):
        if method not in METHODS:
            return f"Unknown method '{excerpt(method)}'; choose one of {', '.join(METHODS)}."
        if method != "fitted":
            return True
        try:
            check_named(bridge_file if bridge_file != NO_FILE else "")
        except ValueError as error:
            return str(error)
        return True

    @node_errors("Latent Bridge")
    def bridge(self, latent, method, source_format, target_format, bridge_file, tile_size, overlap,
               source_vae=None, target_vae=None):
        samples = samples_of(latent)
        require(method in METHODS, f"Unknown method '{excerpt(method)}'.", f"Choose one of: {', '.join(METHODS)}.")
        require(target_format in FORMATS, f"Unknown target format '{excerpt(target_format)}'.",
                f"Choose one of: {', '.join(FORMATS)}.")
        target = FORMATS[target_format]
        tag = {"method": method, "target": target.key}
        if method == "fitted":
            module, metadata = load_named(bridge_file if bridge_file != NO_FILE else "")
            hint = latent.get(LATENT_FORMAT_KEY) or metadata["source_format"]
            source = _source_format(samples, source_format, hint)
            _check_direction(bridge_file, metadata, source.key, target.key)
            progress = Progress(samples.shape[0])
            out = bridges.apply(module, samples, torch_device(), progress.update)
            tag["file"] = bridge_file
            info = f"fitted {bridge_file}: {describe(metadata)}"
        else:
            source = _source_format(samples, source_format, latent.get(LATENT_FORMAT_KEY))
            if method == "approximate":
                out = bridges.approximate(samples.float(), source, target)
                info = (f"approximate {source.label} -> {target.label}: linear RGB factors + channel statistics; "
                        "colors only, follow with img2img at denoise >= 0.4")
            else:
                out = self._roundtrip(samples, source, target, source_vae, target_vae, tile_size, overlap)
                info = f"vae_roundtrip {source.label} -> {target.label}, {samples.shape[0]} item(s)"
        tag["source"] = source.key
        out = check_latent(out.to(intermediate_device()).float())
        return ui_result((with_samples(latent, out, target, **{BRIDGE_TAG: tag}), info), text=info)

    @staticmethod
    def _roundtrip(samples, source, target, source_vae, target_vae, tile_size, overlap):
        require(source_vae is not None and target_vae is not None, "vae_roundtrip needs both VAEs.",
                "Connect source_vae and target_vae, or pick method approximate or fitted.")
        bridge_vae.check_vae(source_vae, "source_vae")
        bridge_vae.check_vae(target_vae, "target_vae")
        comfy_objects.check_vae_matches(source_vae, source.channels, f"{source.label} format")
        require(comfy_objects.vae_channels(target_vae) == target.channels,
                f"The target VAE makes {comfy_objects.vae_channels(target_vae)}-channel latents but the "
                f"{target.label} format has {target.channels}.",
                "Connect the target model's VAE, or fix target_format.")
        return bridge_vae.roundtrip(samples, source_vae, target_vae, tile_size, overlap)


def _source_format(samples, choice, hint):
    try:
        return resolve_format(choice, samples.shape[1], hint)
    except LatentLabInputError as error:
        if choice != "auto":
            raise
        fix = "Set source_format to the format of the model that made it."
        raise LatentLabInputError(error.problem, fix) from error


def _check_direction(name, metadata, source, target):
    have = f"{FORMATS[metadata['source_format']].label} -> {FORMATS[metadata['target_format']].label}"
    want = f"{FORMATS[source].label} -> {FORMATS[target].label}"
    require(metadata["source_format"] == source and metadata["target_format"] == target,
            f"'{name}' bridges {have}, but this node is set to {want}.",
            "Pick a bridge file for that direction, or set source and target format to match the file "
            "(Fit Latent Bridge can make both directions).")


DIRECTIONS = ("source_to_target", "both")


class FitLatentBridge:
    DESCRIPTION = ("Fits latent bridges between two VAEs: encodes images (yours and/or a built-in procedural "
                   "calibration set, with flip/crop augmentation) with both, fits a per-cell affine map in closed "
                   "form and, if asked, a small conv net, measures them on held-out images, and saves one "
                   ".safetensors file per direction and kind in models/latent_bridges/ for the Latent Bridge node.")
    CATEGORY = f"{CATEGORY}/Bridge"
    FUNCTION = "fit"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("report", "comparison")
    OUTPUT_TOOLTIPS = ("Fit report as JSON: one entry per saved file with direction, kind, parameters, held-out "
                       "latent MSE (raw units and share of variance), held-out pixel PSNR of decode_B(bridge(z_A)) "
                       "against decode_A(z_A), the same PSNR for the VAE round trip, and the data sizes.",
                       "First held-out image per direction, side by side: source VAE decode, each fitted bridge "
                       "decoded by the target VAE, then the VAE round trip.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source_vae": ("VAE", {"tooltip": "VAE of the source format (the format latents come from)."}),
                "target_vae": ("VAE", {"tooltip": "VAE of the target format (the format latents go to)."}),
                "source_format": (list(FORMATS), {"default": "sdxl", "tooltip": "Format of source_vae; recorded in the file, the Latent Bridge node checks it."}),
                "target_format": (list(FORMATS), {"default": "sd15", "tooltip": "Format of target_vae; recorded in the file."}),
                "directions": (list(DIRECTIONS), {"default": "both", "tooltip": "source_to_target: one bridge. both: also target -> source, from the same encodes."}),
                "calibration_images": ("INT", {"default": 16, "min": 0, "max": 256, "tooltip": "Built-in procedural images (color fields, gradients, shapes, textures) to fit on. 0: only the connected images."}),
                "calibration_size": ("INT", {"default": 256, "min": 64, "max": 1024, "step": 64, "tooltip": "Side of each calibration image in pixels."}),
                "augment_views": ("INT", {"default": 4, "min": 1, "max": 8, "tooltip": "Views per training image: the image, flips and crops shifted by 0-7 px (so cells straddle different pixels). 1: no augmentation."}),
                "conv_steps": ("INT", {"default": 0, "min": 0, "max": 100000, "step": 100, "tooltip": "Training steps of the conv bridge (residual net, ~450K parameters, on top of the affine map). 0: affine only."}),
                "learning_rate": ("FLOAT", {"default": 0.001, "min": 0.00001, "max": 0.1, "step": 0.00001, "tooltip": "Adam learning rate of the conv bridge (cosine decay to a tenth)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "tooltip": "Seed of the calibration set, augmentation and conv training: same seed, same files."}),
                "filename": ("STRING", {"default": "sdxl_sd15_bridge", "tooltip": "Base name in models/latent_bridges/; '_<source>_to_<target>_<kind>.safetensors' is added."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace existing files of those names."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Your calibration images (varied content helps; 256-512 px). The last fifth is held out for the report."}),
            },
        }

    @node_errors("Fit Latent Bridge")
    def fit(self, source_vae, target_vae, source_format, target_format, directions, calibration_images,
            calibration_size, augment_views, conv_steps, learning_rate, seed, filename, overwrite, images=None):
        require(directions in DIRECTIONS, f"Unknown directions '{excerpt(directions)}'.",
                f"Choose one of: {', '.join(DIRECTIONS)}.")
        plan = [(source_format, target_format, False)]
        if directions == "both":
            plan.append((target_format, source_format, True))
        require(source_format != target_format or len(plan) == 1,
                "Both directions need two different formats.", "Set directions to source_to_target.")
        self._check_vae(source_vae, source_format, "source")
        self._check_vae(target_vae, target_format, "target")
        require(isinstance(filename, str) and filename.strip() != "", "No filename was given.",
                "Type a base name for the bridge files.")
        kinds = ["affine"] + (["conv"] if conv_steps > 0 else [])
        paths = {(s, t, k): self._path(filename, s, t, k, overwrite) for s, t, _ in plan for k in kinds}
        groups = self._image_groups(images, calibration_images, calibration_size, seed)
        train, held = self._pairs(source_vae, target_vae, groups, augment_views, seed)
        progress = Progress(max(1, conv_steps * len(plan)))
        entries, comparisons, saves = [], [], []
        for source, target, reverse in plan:
            from_vae, to_vae = (target_vae, source_vae) if reverse else (source_vae, target_vae)
            orient = (lambda pairs: [p[::-1] for p in pairs]) if reverse else (lambda pairs: pairs)
            results, comparison = bridges.fit_direction(
                orient(train), orient(held),
                lambda z, vae=from_vae: comfy_objects.decode(vae, z),
                lambda z, vae=to_vae: comfy_objects.decode(vae, z),
                lambda x, vae=to_vae: comfy_objects.encode(vae, x),
                conv_steps, learning_rate, seed, device=torch_device(), callback=lambda step, loss: progress.update())
            comparisons.append(comparison)
            for kind, bridge, report in results:
                path = paths[(source, target, kind)]
                entries.append({"file": os.path.basename(path), "direction": f"{source}->{target}", **report})
                saves.append((path, bridge, source, target, report))
        for path, bridge, source, target, report in saves:  # all or nothing: an interrupt above saves no file
            save_bridge(path, bridge, source, target, report)
        comparison = torch.cat(comparisons) if len({c.shape for c in comparisons}) == 1 else comparisons[0]
        text = "\n".join(_report_line(entry) for entry in entries)
        return ui_result((json_text({"files": entries}), comparison), text=text,
                         images=preview_images(comparison, "latentlab_bridge_fit"))

    @staticmethod
    def _check_vae(vae, key, side):
        bridge_vae.check_vae(vae, f"{side}_vae")
        require(key in FORMATS, f"Unknown {side} format '{excerpt(key)}'.", f"Choose one of: {', '.join(FORMATS)}.")
        fmt = FORMATS[key]
        require(comfy_objects.vae_channels(vae) == fmt.channels,
                f"The {side} VAE makes {comfy_objects.vae_channels(vae)}-channel latents but {fmt.label} latents "
                f"have {fmt.channels}.", f"Connect the {fmt.label} VAE or fix {side}_format.")

    @staticmethod
    def _path(filename, source, target, kind, overwrite):
        path = folders.output_path("latent_bridges", f"{filename.strip()}_{source}_to_{target}_{kind}")
        require(overwrite or not os.path.exists(path),
                f"models/latent_bridges/{os.path.basename(path)} already exists.",
                "Choose another filename or turn on overwrite.")
        return path

    @staticmethod
    def _image_groups(images, count, size, seed) -> list:
        groups = []
        if images is not None:
            images = check_image(images)
            require(min(images.shape[1:3]) >= 32,
                    f"The images are {images.shape[2]}x{images.shape[1]} pixels, too small to fit a bridge on.",
                    "Use images of at least 32x32 pixels (256x256 or more fits better).")
            groups.append(images.float())
        if count > 0:
            groups.append(calibration.calibration_images(count, size, seed))
        require(sum(g.shape[0] for g in groups) >= 2,
                "Fitting a bridge needs at least 2 images: some are held out to measure it.",
                "Raise calibration_images, or connect more images.")
        return groups

    @staticmethod
    def _pairs(source_vae, target_vae, groups, views, seed) -> tuple[list, list]:
        """(train, held) lists of (source latents, target latents); each group's last fifth is held out unaugmented."""
        train, held = [], []
        counts = [max(1, round(g.shape[0] * 0.2)) if g.shape[0] >= 2 else 0 for g in groups]
        if sum(counts) == 0:  # single images only: hold the last one out
            counts[-1] = groups[-1].shape[0]
        for images, count in zip(groups, counts):
            for split, batch in ((train, images[:images.shape[0] - count]), (held, images[images.shape[0] - count:])):
                if batch.shape[0] == 0:
                    continue
                check_interrupt()
                batch = calibration.augment(batch, views, seed) if split is train else calibration.crop_to_cells(batch)
                split.append((comfy_objects.encode(source_vae, batch), comfy_objects.encode(target_vae, batch)))
        require(train and held, "Too few images to both fit and measure a bridge.", "Use at least 2 images.")
        return train, held


def _report_line(entry: dict) -> str:
    return (f"{entry['file']}: {entry['direction']} {entry['kind']} · held-out pixel PSNR "
            f"{entry['held_out_pixel_psnr_db']:.2f} dB (VAE round trip {entry['roundtrip_pixel_psnr_db']:.2f} dB) · "
            f"latent MSE {entry['held_out_latent_relative_mse']:.4f} of variance")


NODES = {
    "LatentLabBridge": (LatentBridge, "Latent Bridge"),
    "LatentLabFitBridge": (FitLatentBridge, "Fit Latent Bridge"),
}
