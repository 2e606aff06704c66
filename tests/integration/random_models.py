"""Random-weight SD1.x-architecture models built with ComfyUI's own classes, saved as safetensors.

Run as a script with ComfyUI's Python: `python random_models.py COMFYUI_PATH KIND OUT_FILE SEED`
(KIND: vae or sd15_checkpoint). The weights are random but the architecture, the file layout and the
loading path (VAELoader, CheckpointLoaderSimple) are the real ones, so compute and plumbing match
real SD models; their outputs mean nothing.
"""
import math
import os
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
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def random_init_(module, seed: int) -> None:
    """Variance-preserving uniform weights, unit norms, zero biases; ComfyUI's ops skip init on purpose."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                bound = math.sqrt(3.0 / param[0].numel())
                param.copy_((torch.rand(param.shape, generator=generator) * 2 - 1) * bound)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)


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
    state = vae_state_dict(seed) if kind == "vae" else checkpoint_state_dict(seed)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items() if v.is_floating_point()}
    temporary = out_file + ".partial"
    save_file(state, temporary, metadata={"latent_lab_test": f"random {kind}, seed {seed}"})
    os.replace(temporary, out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
