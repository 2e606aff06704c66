"""Foundation inside real ComfyUI: loader, /object_info, a prompt over HTTP, fitting on ComfyUI's VAE class."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from latent_lab import NODE_CLASS_MAPPINGS


def write_test_images(server, count: int = 3, size: int = 64) -> list[str]:
    rng = np.random.default_rng(7)
    names = []
    for i in range(count):
        y, x = np.mgrid[0:size, 0:size] / size
        base = rng.uniform(0, 1, 3)
        image = np.stack([base[0] * x + 0.2 * y, base[1] * (1 - x), base[2] * y], -1)
        image += rng.normal(0, 0.05, image.shape)
        name = f"latentlab_it_{i}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(os.path.join(server.input_dir, name))
        names.append(name)
    return names


def image_batch_prompt(names: list[str]) -> dict:
    prompt = {f"load{i}": {"class_type": "LoadImage", "inputs": {"image": name}} for i, name in enumerate(names)}
    current = ["load0", 0]
    for i in range(1, len(names)):
        prompt[f"batch{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": current, "image2": [f"load{i}", 0]}}
        current = [f"batch{i}", 0]
    return prompt, current


def test_pack_loads_through_custom_node_loader(comfy_server):
    log = comfy_server.log()
    timing = [line for line in log.splitlines() if "seconds" in line and comfy_server.pack_dir_name in line]
    assert timing, "ComfyUI's loader did not list the pack under 'Import times for custom nodes'"
    assert "IMPORT FAILED" not in timing[0], log[-4000:]
    tracebacks = log.split("Traceback (most recent call last):")[1:]
    assert not [t for t in tracebacks if comfy_server.pack_dir_name in t.split("\n\n")[0]], log[-4000:]


def test_object_info_lists_every_node_with_our_inputs(comfy_server):
    info = comfy_server.object_info()
    for key, cls in NODE_CLASS_MAPPINGS.items():
        assert key in info, f"{key} missing from /object_info"
        served = info[key]
        ours = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert set(served["input"].get(section, {})) == set(ours.get(section, {})), (key, section)
            for name, spec in ours.get(section, {}).items():
                served_type = served["input"][section][name][0]
                if isinstance(spec[0], list):
                    assert isinstance(served_type, list) and set(spec[0][:2]) <= set(served_type), (key, name)
                else:
                    assert served_type == spec[0], (key, name)
        assert served["output"] == list(cls.RETURN_TYPES)
        assert served["output_name"] == list(cls.RETURN_NAMES)
        assert served["category"].startswith("Latent Lab")


def test_inspection_prompt_returns_images(comfy_server, random_sd_vae):
    names = write_test_images(comfy_server, 2)
    prompt, images = image_batch_prompt(names)
    prompt.update({
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": images, "vae": ["vae", 0]}},
        "preview": {"class_type": "LatentLabRGBPreview", "inputs": {
            "latent": ["encode", 0], "format": "sd15", "factors": "comfyui", "size": "x8", "resample": "nearest"}},
        "maps": {"class_type": "LatentLabChannelMaps", "inputs": {
            "latent": ["encode", 0], "format": "sd15", "units": "scaled", "scale": "shared", "tile_scale": 4}},
        "stats": {"class_type": "LatentLabStats", "inputs": {
            "latent": ["encode", 0], "format": "sd15", "units": "scaled", "sigma_k": 3.0, "factors": "comfyui"}},
    })
    outputs = comfy_server.run(prompt, timeout=300)
    previews = outputs["preview"]["images"]
    assert len(previews) == 2
    picture = Image.open(io.BytesIO(comfy_server.view(previews[0])))
    assert picture.size == (64, 64)
    assert len(outputs["maps"]["images"]) == 2
    report_text = outputs["stats"]["text"][0]
    assert "SD" not in report_text or "sd15" in report_text
    assert len(outputs["stats"]["images"]) == 1


def test_fit_node_on_random_sd_vae_saves_listed_loadable_factors(comfy_server, random_sd_vae):
    names = write_test_images(comfy_server, 3)
    prompt, images = image_batch_prompt(names)
    prompt.update({
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae}},
        "fit": {"class_type": "LatentLabFitRGBFactors", "inputs": {
            "vae": ["vae", 0], "images": images, "target": "vae_decode", "format": "sd15",
            "filename": "it_random_vae", "overwrite": True}},
    })
    outputs = comfy_server.run(prompt, timeout=600)
    assert "it_random_vae.safetensors" in outputs["fit"]["text"][0]
    saved = os.path.join(comfy_server.models_dir, "latent_rgb", "it_random_vae.safetensors")
    assert os.path.isfile(saved)
    listed = comfy_server.object_info()["LatentLabRGBPreview"]["input"]["required"]["factors"][0]
    assert "it_random_vae.safetensors" in listed

    prompt = {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae}},
        "pixels": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x3366cc}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["pixels", 0], "vae": ["vae", 0]}},
        "preview": {"class_type": "LatentLabRGBPreview", "inputs": {
            "latent": ["encode", 0], "format": "auto", "factors": "it_random_vae.safetensors",
            "size": "latent", "resample": "nearest"}},
    }
    outputs = comfy_server.run(prompt, timeout=300)
    assert len(outputs["preview"]["images"]) == 1


def test_missing_factor_file_says_how_to_make_it(comfy_server):
    prompt = {
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "preview": {"class_type": "LatentLabRGBPreview", "inputs": {
            "latent": ["latent", 0], "format": "sd15", "factors": "from_a_friend.safetensors",
            "size": "latent", "resample": "nearest"}},
    }
    with pytest.raises(comfy_server.PromptError) as refused:
        comfy_server.run(prompt, timeout=60)
    assert "Fit Latent RGB Factors" in str(refused.value)
    assert "models/latent_rgb" in str(refused.value)


def test_ambiguous_format_error_reaches_the_user(comfy_server):
    prompt = {
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "preview": {"class_type": "LatentLabRGBPreview", "inputs": {
            "latent": ["latent", 0], "format": "auto", "factors": "comfyui", "size": "latent", "resample": "nearest"}},
    }
    with pytest.raises(comfy_server.PromptError) as failed:
        comfy_server.run(prompt, timeout=60)
    assert "Latent RGB Preview" in str(failed.value) and "ambiguous" in str(failed.value)


def test_format_comes_from_a_connected_model(comfy_server, random_sd15_checkpoint):
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": random_sd15_checkpoint}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "stats": {"class_type": "LatentLabStats", "inputs": {
            "latent": ["latent", 0], "format": "auto", "units": "scaled", "sigma_k": 3.0, "factors": "comfyui",
            "model": ["ckpt", 0]}},
    }
    outputs = comfy_server.run(prompt, timeout=300)
    assert outputs["stats"]["text"][0].startswith("sd15")
