"""Bridge inside real ComfyUI: vae_roundtrip with two random-weight SD VAEs against ComfyUI's own VAE nodes, the
fit node end to end, and the saved file listed in /object_info and loaded by the Latent Bridge node."""
import os

import pytest
from safetensors.torch import load_file


def saved_latent(server, outputs: dict, node: str):
    entry = outputs[node]["latents"][0]
    return load_file(os.path.join(server.output_dir, entry["subfolder"], entry["filename"]))["latent_tensor"]


def colored_batch(size: int) -> dict:
    """Two 64-128 px images with structure: EmptyImage colors composited, as IMAGE [2, size, size, 3]."""
    return {
        "red": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0xcc3322}},
        "blue": {"class_type": "EmptyImage", "inputs": {"width": size // 2, "height": size // 2, "batch_size": 1, "color": 0x2255ee}},
        "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": size // 2, "height": size // 2}},
        "composite": {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": ["red", 0], "source": ["blue", 0], "x": size // 4, "y": size // 8, "resize_source": False,
            "mask": ["mask", 0]}},
        "batch": {"class_type": "ImageBatch", "inputs": {"image1": ["composite", 0], "image2": ["red", 0]}},
    }


def roundtrip_prompt(vae_a: str, vae_b: str, size: int, tile_size: int, overlap: int) -> dict:
    prompt = colored_batch(size)
    tiled = tile_size > 0 and size > tile_size
    decode = {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["encode", 0], "vae": ["vae_a", 0],
                                                         "tile_size": tile_size, "overlap": overlap,
                                                         "temporal_size": 64, "temporal_overlap": 8}} \
        if tiled else {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": ["vae_a", 0]}}
    encode = {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["decode", 0], "vae": ["vae_b", 0],
                                                         "tile_size": tile_size, "overlap": overlap,
                                                         "temporal_size": 64, "temporal_overlap": 8}} \
        if tiled else {"class_type": "VAEEncode", "inputs": {"pixels": ["decode", 0], "vae": ["vae_b", 0]}}
    prompt.update({
        "vae_a": {"class_type": "VAELoader", "inputs": {"vae_name": vae_a}},
        "vae_b": {"class_type": "VAELoader", "inputs": {"vae_name": vae_b}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["batch", 0], "vae": ["vae_a", 0]}},
        "bridge": {"class_type": "LatentLabBridge", "inputs": {
            "latent": ["encode", 0], "method": "vae_roundtrip", "source_format": "sd15", "target_format": "sdxl",
            "bridge_file": "none", "tile_size": tile_size, "overlap": overlap,
            "source_vae": ["vae_a", 0], "target_vae": ["vae_b", 0]}},
        "decode": decode,
        "reference": encode,
        "save_bridge": {"class_type": "SaveLatent", "inputs": {"samples": ["bridge", 0], "filename_prefix": "it_bridge/rt"}},
        "save_reference": {"class_type": "SaveLatent", "inputs": {"samples": ["reference", 0], "filename_prefix": "it_bridge/ref"}},
    })
    return prompt


@pytest.mark.parametrize("size, tile_size, overlap", [(64, 512, 64), (128, 64, 16)])
def test_vae_roundtrip_matches_comfyuis_decode_then_encode(comfy_server, random_sd_vae, random_sd_vae_b,
                                                           size, tile_size, overlap):
    """Every batch item; 128 px with 64 px tiles takes the tiled path and must equal ComfyUI's tiled nodes."""
    outputs = comfy_server.run(roundtrip_prompt(random_sd_vae, random_sd_vae_b, size, tile_size, overlap), timeout=600)
    bridged = saved_latent(comfy_server, outputs, "save_bridge")
    reference = saved_latent(comfy_server, outputs, "save_reference")
    assert bridged.shape == reference.shape == (2, 4, size // 8, size // 8)
    assert bridged.isfinite().all()
    scale = reference.abs().max().item()
    assert (bridged - reference).abs().max().item() <= 1e-3 * scale + 1e-5


def test_fit_node_end_to_end_then_bridge_node_lists_and_loads_the_file(comfy_server, random_sd_vae, random_sd_vae_b):
    prompt = {
        "vae_a": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae}},
        "vae_b": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae_b}},
        "fit": {"class_type": "LatentLabFitBridge", "inputs": {
            "source_vae": ["vae_a", 0], "target_vae": ["vae_b", 0], "source_format": "sdxl", "target_format": "sd15",
            "directions": "both", "calibration_images": 5, "calibration_size": 64, "augment_views": 2,
            "conv_steps": 5, "learning_rate": 0.001, "seed": 0, "filename": "it_bridge", "overwrite": True}},
    }
    outputs = comfy_server.run(prompt, timeout=600)
    text = outputs["fit"]["text"][0]
    names = [f"it_bridge_{s}_to_{t}_{k}.safetensors" for s, t in (("sdxl", "sd15"), ("sd15", "sdxl"))
             for k in ("affine", "conv")]
    for name in names:
        assert name in text
        assert os.path.isfile(os.path.join(comfy_server.models_dir, "latent_bridges", name))
    assert "held-out pixel PSNR" in text and "VAE round trip" in text
    assert len(outputs["fit"]["images"]) == 2  # one comparison strip per direction

    listed = comfy_server.object_info()["LatentLabBridge"]["input"]["required"]["bridge_file"][0]
    assert set(names) <= set(listed)

    prompt = {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae}},
        "pixels": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0x3366cc}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["pixels", 0], "vae": ["vae", 0]}},
        "bridge": {"class_type": "LatentLabBridge", "inputs": {
            "latent": ["encode", 0], "method": "fitted", "source_format": "sdxl", "target_format": "sd15",
            "bridge_file": "it_bridge_sdxl_to_sd15_conv.safetensors", "tile_size": 512, "overlap": 64}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["bridge", 0], "filename_prefix": "it_bridge/fitted"}},
    }
    outputs = comfy_server.run(prompt, timeout=300)
    bridged = saved_latent(comfy_server, outputs, "save")
    assert bridged.shape == (2, 4, 8, 8) and bridged.isfinite().all()


def test_missing_bridge_file_says_how_to_make_it(comfy_server):
    prompt = {
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "bridge": {"class_type": "LatentLabBridge", "inputs": {
            "latent": ["latent", 0], "method": "fitted", "source_format": "sdxl", "target_format": "sd15",
            "bridge_file": "from_a_friend.safetensors", "tile_size": 512, "overlap": 64}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["bridge", 0], "filename_prefix": "it_bridge/x"}},
    }
    with pytest.raises(comfy_server.PromptError) as refused:
        comfy_server.run(prompt, timeout=60)
    assert "Fit Latent Bridge" in str(refused.value) and "models/latent_bridges" in str(refused.value)


def test_approximate_runs_without_file_or_vae(comfy_server):
    prompt = {
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "bridge": {"class_type": "LatentLabBridge", "inputs": {
            "latent": ["latent", 0], "method": "approximate", "source_format": "sd15", "target_format": "sdxl",
            "bridge_file": "none", "tile_size": 512, "overlap": 64}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["bridge", 0], "filename_prefix": "it_bridge/approx"}},
    }
    bridged = saved_latent(comfy_server, comfy_server.run(prompt, timeout=60), "save")
    assert bridged.shape == (2, 4, 8, 8) and bridged.isfinite().all()
