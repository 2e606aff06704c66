"""Tiny random-weight transformer models built in-process with ComfyUI's own model configs and classes.

Each builder returns (ModelPatcher, positive, negative): the model as comfy.supported_models' config and
model_base build it for a real checkpoint of that family (same extra conds, latent format, sampling settings),
with a few small blocks, and conditioning shaped as that family's text encoders give it (random values).
- Flux.1-dev type: comfy.supported_models.Flux (guidance_embed True), model_base.Flux, 16-channel latents.
- Flux.1-schnell type: the same without a guidance embedding (guidance_embed False).
- SD3 type: comfy.supported_models.SD3, model_base.SD3 (MMDiT), 16-channel latents.
- Wan 2.1 type: comfy.supported_models.WAN21_T2V, model_base.WAN21, 16-channel 5-D video latents [B, C, T, H, W].
- HunyuanVideo type with a guidance embedding, saved as a diffusion-model file that ComfyUI's own detection reads
  back (UNETLoader), for tests through a real server.
Run as a script with ComfyUI's Python to write the HunyuanVideo-type file:
`python random_dit_models.py COMFYUI_PATH OUT_FILE SEED`.
"""
import os

from random_models import random_init_

RANDOM_DIT_MODELS_VERSION = 1

FLUX_DEV = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 32,
    "context_in_dim": 48, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
    "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True, "guidance_embed": True,
}
FLUX_SCHNELL = {**FLUX_DEV, "guidance_embed": False}
SD3_MMDIT = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None, "adm_in_channels": 32,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 48, "out_features": 128}},
    "num_patches": 256, "pos_embed_max_size": 16, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
}
WAN_T2V = {
    "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 16, "in_dim": 16,
    "dim": 64, "ffn_dim": 128, "freq_dim": 64, "text_dim": 48, "out_dim": 16, "num_heads": 2, "num_layers": 2,
    "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}
TOKENS = 12


def _patcher(config_name: str, unet_config: dict, seed: int):
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    config = getattr(comfy.supported_models, config_name)(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    random_init_(base.diffusion_model, seed)
    base.eval()
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def _prompt(seed: int, width: int, pooled: int | None = None, **extra) -> list:
    import torch
    generator = torch.Generator().manual_seed(seed)
    options = dict(extra)
    tokens = torch.randn(1, TOKENS, width, generator=generator)
    if pooled is not None:
        options["pooled_output"] = torch.randn(1, pooled, generator=generator)
    return [[tokens, options]]


def flux_model(guidance: bool = True, seed: int = 0):
    """Flux.1-dev type (guidance embedding) or, with guidance False, Flux.1-schnell type. The positive conditioning
    carries guidance 3.5 as CLIPTextEncodeFlux writes it; the negative none (model_base.Flux then uses 3.5)."""
    model = _patcher("Flux" if guidance else "FluxSchnell", FLUX_DEV if guidance else FLUX_SCHNELL, seed)
    width, pooled = FLUX_DEV["context_in_dim"], FLUX_DEV["vec_in_dim"]
    return model, _prompt(seed + 1, width, pooled, guidance=3.5), _prompt(seed + 2, width, pooled)


def sd3_model(seed: int = 0):
    model = _patcher("SD3", SD3_MMDIT, seed)
    width, pooled = SD3_MMDIT["context_embedder_config"]["params"]["in_features"], SD3_MMDIT["adm_in_channels"]
    return model, _prompt(seed + 1, width, pooled), _prompt(seed + 2, width, pooled)


def wan_model(seed: int = 0):
    model = _patcher("WAN21_T2V", WAN_T2V, seed)
    return model, _prompt(seed + 1, WAN_T2V["text_dim"]), _prompt(seed + 2, WAN_T2V["text_dim"])


# HunyuanVideo type with a guidance embedding, sized so that ComfyUI's detection reads it back from a file
# (hidden size 128: one head of 128; vector_in 768 and context 768, what SD1.x's CLIP-L gives): a
# guidance-distilled video model a real server loads with UNETLoader and conditions with CLIPTextEncode.
HUNYUAN_VIDEO = {
    "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 768,
    "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 1, "depth_single_blocks": 1,
    "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 2, 2], "qkv_bias": True, "guidance_embed": True,
    "byt5": False, "meanflow": False,
}


def hunyuan_video_state_dict(seed: int = 0) -> dict:
    """The diffusion model's weights (float32), named as a HunyuanVideo diffusion-model file names them."""
    import torch
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    model = HunyuanVideo(**HUNYUAN_VIDEO, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    random_init_(model, seed)
    return {k: v.detach() for k, v in model.state_dict().items()}


def cached_hunyuan_video(comfy_path: str, seed: int = 0) -> str:
    """Build (once, in a subprocess with ComfyUI's classes) the HunyuanVideo-type diffusion-model file; its path."""
    import subprocess
    import sys
    from random_models import CACHE
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"random_hunyuan_video_s{seed}_v{RANDOM_DIT_MODELS_VERSION}.safetensors")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.abspath(__file__), comfy_path, path, str(seed)], check=True,
                       cwd=comfy_path, timeout=900)
    return path


def main(comfy_path: str, out_file: str, seed: int) -> None:
    import sys
    sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    from safetensors.torch import save_file
    temporary = out_file + ".partial"
    state = {k: v.contiguous() for k, v in hunyuan_video_state_dict(seed).items()}
    save_file(state, temporary, metadata={"latent_lab_test": f"random hunyuan_video, seed {seed}"})
    os.replace(temporary, out_file)


if __name__ == "__main__":
    import sys
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
