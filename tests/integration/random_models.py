"""Random-weight SD1.x- and SDXL-architecture models built with ComfyUI's own classes, saved as safetensors.

Run as a script with ComfyUI's Python: `python random_models.py COMFYUI_PATH KIND OUT_FILE SEED`
(KIND: vae, sd15_checkpoint, or one of SDXL_FAMILY). The weights are random but the architecture, the file layout
and the loading path (VAELoader, CheckpointLoaderSimple) are the real ones, so compute and plumbing match
real SD models; their outputs mean nothing.
"""
import json
import math
import os
import struct
import subprocess
import sys

CACHE = os.environ.get("LATENT_LAB_IT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "latent-lab-it"))
RANDOM_MODELS_VERSION = 1

SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# A small SD1.5-type UNet (32 base channels): sampling in tests runs in well under a second per step on a CPU.
SMALL_SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "transformer_depth_output": [1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# SDXL-family UNets. ComfyUI's model config (comfy.supported_models) holds the keys its detection matches on; the
# rest of each architecture, which ComfyUI reads off the file, is here.
SDXL_UNET_COMMON = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "in_channels": 4, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
    "use_temporal_resblock": False,
}
SDXL_FAMILY = {
    # SDXL base 1.0: a 2.6B-parameter UNet.
    "sdxl_checkpoint": ("SDXL", {"transformer_depth_middle": 10,
                                 "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10]}),
    # Segmind Vega, a 0.75B distillation of SDXL. ComfyUI's Segmind_Vega config is an SDXL subclass: SDXL latent
    # format, CLIP-L + CLIP-G, the SDXL model class and conditioning; only the UNet's transformer depths differ.
    "sdxl_vega_checkpoint": ("Segmind_Vega", {"transformer_depth_middle": -1,
                                              "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2]}),
}
# Which SDXL-family checkpoint integration tests get: LATENT_LAB_IT_SDXL=base for SDXL base itself (needs about
# 13 GB of RAM for its weights in float32 and runs a 128 px step in tens of seconds on 2 CPU cores), vega (default).
SDXL_CHOICES = {"base": "sdxl_checkpoint", "vega": "sdxl_vega_checkpoint"}
SDXL_KIND = SDXL_CHOICES.get(os.environ.get("LATENT_LAB_IT_SDXL", "vega"))
if SDXL_KIND is None:
    raise ValueError(f"LATENT_LAB_IT_SDXL must be one of {', '.join(SDXL_CHOICES)}")
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def random_values(name: str, shape, generator):
    """Variance-preserving uniform weights, unit norms, zero biases; ComfyUI's ops skip init on purpose."""
    import torch
    if len(shape) >= 2:
        bound = math.sqrt(3.0 / math.prod(shape[1:]))
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return torch.zeros(shape) if name.endswith("bias") else torch.ones(shape)


def random_init_(module, seed: int) -> None:
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(random_values(name, param.shape, generator))


def small_sd15_model(unet_config: dict, seed: int = 0):
    """A ComfyUI ModelPatcher around a random-weight SD1.5-type UNet built from ComfyUI's SD15 config and
    BaseModel (a small unet_config keeps CPU sampling fast). Needs ComfyUI importable."""
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SD15(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    random_init_(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def vae_state_dict(seed: int) -> dict:
    from comfy.ldm.models.autoencoder import AutoencoderKL
    vae = AutoencoderKL(ddconfig=dict(SD_VAE), embed_dim=4)
    random_init_(vae, seed)
    return vae.state_dict()


def checkpoint_state_dict(seed: int) -> dict:
    import torch
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    unet = UNetModel(**SD15_UNET, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    random_init_(unet, seed)
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    random_init_(clip, seed + 1)
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"cond_stage_model.{k}": v for k, v in clip.state_dict().items()})
    state.update({f"first_stage_model.{k}": v for k, v in vae_state_dict(seed + 2).items()})
    return state


def sdxl_config(kind: str):
    """ComfyUI's model config object for one of SDXL_FAMILY, with the whole UNet architecture."""
    import comfy.supported_models
    class_name, rest = SDXL_FAMILY[kind]
    config_class = getattr(comfy.supported_models, class_name)
    return config_class({**config_class.unet_config, **SDXL_UNET_COMMON, **rest})


def sdxl_checkpoint_shapes(kind: str) -> dict:
    """{tensor name: shape} of an SDXL-family checkpoint as ComfyUI saves one: its UNet, CLIP-L + CLIP-G and KL-F8
    VAE built on the meta device (no memory), named by the model config's own saving conversions."""
    import torch
    import comfy.ops
    import comfy.sdxl_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    config = sdxl_config(kind)
    with torch.device("meta"):
        unet = UNetModel(**{**config.unet_config, "dtype": torch.float16}, device="meta",
                         operations=comfy.ops.disable_weight_init)
        clip = comfy.sdxl_clip.SDXLClipModel(device="meta", dtype=torch.float16)
        vae = AutoencoderKL(ddconfig=dict(SD_VAE), embed_dim=4)
    state = {}
    state.update(config.process_unet_state_dict_for_saving(unet.state_dict()))
    state.update(config.process_clip_state_dict_for_saving(clip.state_dict()))
    state.update(config.process_vae_state_dict_for_saving(vae.state_dict()))
    return {name: tuple(value.shape) for name, value in state.items() if value.is_floating_point()}


def write_random_safetensors(path: str, shapes: dict, seed: int, metadata: dict) -> None:
    """An fp16 safetensors file of random_values, written one tensor at a time: a multi-GB model never has to
    fit in memory twice (safetensors' save_file copies every tensor to bytes before writing)."""
    import torch
    header, offset = {"__metadata__": metadata}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for name, shape in shapes.items():
            handle.write(random_values(name, shape, generator).to(torch.float16).numpy().tobytes())


def cached_random_model(kind: str, seed: int, comfy_path: str) -> str:
    """Build (once) a random-weight model file with ComfyUI's classes, in a subprocess; the cached file's path."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"random_{kind}_s{seed}_v{RANDOM_MODELS_VERSION}.safetensors")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.abspath(__file__), comfy_path, kind, path, str(seed)],
                       check=True, cwd=comfy_path, timeout=900)
    return path


def main(comfy_path: str, kind: str, out_file: str, seed: int) -> None:
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import torch
    from safetensors.torch import save_file
    temporary = out_file + ".partial"
    metadata = {"latent_lab_test": f"random {kind}, seed {seed}"}
    if kind in SDXL_FAMILY:
        write_random_safetensors(temporary, sdxl_checkpoint_shapes(kind), seed, metadata)
    else:
        state = vae_state_dict(seed) if kind == "vae" else checkpoint_state_dict(seed)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items() if v.is_floating_point()}
        save_file(state, temporary, metadata=metadata)
    os.replace(temporary, out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
