"""Hostile prompts posted to a real ComfyUI server: each is refused with Latent Lab's message, and the server keeps
answering other clients while it validates them (VALIDATE_INPUTS runs on ComfyUI's event loop, where a slow check
holds up every client)."""
import json
import os
import threading
import time
import urllib.error

import pytest
import torch
from safetensors.torch import save_file

LIVELY = 2.0  # seconds: the most /object_info (or a refusal) may take while hostile prompts are being validated
BACKTRACKING = "1-" + " " * 565 + "["  # took the server 134 s with a backtracking item pattern
HUGE_LIST = "7, " * 34_000  # about 100 kB


def sweep_prompt(checkpoint: str, cfg_values: str = "3, 7", seeds: str = "") -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sweep": {"class_type": "LatentLabCFGSweep", "inputs": {
            "model": ["ckpt", 0], "seed": 0, "steps": 2, "cfg_values": cfg_values, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0, "seeds": seeds, "max_batch": 0, "model_batch": "auto", "max_cells": 64}},
        "stats": {"class_type": "LatentLabStats", "inputs": {
            "latent": ["sweep", 0], "format": "sd15", "units": "raw", "sigma_k": 3.0, "factors": "comfyui"}},
    }


def latent_prompt(node: dict) -> dict:
    """An empty 64x64 latent into `node` (an output node, or one followed by Save Latent)."""
    prompt = {"empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "node": node}
    if not node.get("output"):
        prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["node", 0],
                                                                 "filename_prefix": "it_hostile/x"}}
    node.pop("output", None)
    return prompt


def bridge_node(bridge_file: str) -> dict:
    return {"class_type": "LatentLabBridge", "inputs": {
        "latent": ["empty", 0], "method": "fitted", "source_format": "sdxl", "target_format": "sd15",
        "bridge_file": bridge_file, "tile_size": 512, "overlap": 64}}


def preview_node(factors: str) -> dict:
    return {"class_type": "LatentLabRGBPreview", "output": True, "inputs": {
        "latent": ["empty", 0], "format": "sd15", "factors": factors, "size": "latent", "resample": "nearest"}}


def bridge_file(server, name: str, architecture: str) -> str:
    folder = os.path.join(server.models_dir, "latent_bridges")
    os.makedirs(folder, exist_ok=True)
    save_file({"weight": torch.eye(4), "bias": torch.zeros(4)}, os.path.join(folder, name),
              metadata={"latent_lab": "latent_bridge", "source_format": "sdxl", "target_format": "sd15",
                        "architecture": architecture})
    return name


def linked_factor_file(server, tmp_path) -> str:
    outside = tmp_path / "outside_factors.safetensors"
    save_file({"weight": torch.zeros(4, 3), "bias": torch.zeros(3)}, str(outside))
    folder = os.path.join(server.models_dir, "latent_rgb")
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "linked_factors.safetensors")
    if not os.path.lexists(link):
        os.symlink(outside, link)
    return "linked_factors.safetensors"


def post(server, prompt: dict) -> tuple:
    """(refused, body text, seconds) of one POST /prompt."""
    started = time.monotonic()
    try:
        body = json.dumps(server.request("/prompt", {"prompt": prompt, "client_id": server.client_id}))
        refused = False
    except urllib.error.HTTPError as error:
        body, refused = error.read().decode(errors="replace"), True
    return refused, body, time.monotonic() - started


@pytest.fixture(scope="module")
def hostile_prompts(comfy_server, random_sd15_checkpoint, tmp_path_factory):
    """name -> (prompt, what Latent Lab's refusal says); each is refused while ComfyUI validates the prompt."""
    deep = bridge_file(comfy_server, "hostile_deep.safetensors", "[" * 100_000 + "]" * 100_000)
    huge = bridge_file(comfy_server, "hostile_huge.safetensors", json.dumps(
        {"type": "conv", "in_channels": 4, "out_channels": 4, "width": 512, "blocks": 64}))
    linked = linked_factor_file(comfy_server, tmp_path_factory.mktemp("hostile_outside"))
    return {
        "backtracking cfg_values": (sweep_prompt(random_sd15_checkpoint, BACKTRACKING), "CFG Sweep Sampler: Cannot read"),
        "100 kB cfg_values": (sweep_prompt(random_sd15_checkpoint, HUGE_LIST), "characters long, more than 32,768"),
        "5000-digit seed": (sweep_prompt(random_sd15_checkpoint, "3", "9" * 5000), "is outside 0..18446744073709551615"),
        "deeply nested bridge": (latent_prompt(bridge_node(deep)), "architecture entry of 200,000 characters"),
        "302M-parameter bridge": (latent_prompt(bridge_node(huge)), "the limit is 1,500,000"),
        "device-name factors": (latent_prompt(preview_node("con.safetensors")), "reserved device name"),
        "300-character factors": (latent_prompt(preview_node("f" * 300 + ".safetensors")), "bytes long"),
        "linked factors": (latent_prompt(preview_node(linked)), "is a link to a file that is not in models/latent_rgb"),
    }


NAMES = ["backtracking cfg_values", "100 kB cfg_values", "5000-digit seed", "deeply nested bridge",
         "302M-parameter bridge", "device-name factors", "300-character factors", "linked factors"]


@pytest.mark.parametrize("name", NAMES)
def test_hostile_prompt_is_refused_at_validation_with_our_message(comfy_server, hostile_prompts, name):
    prompt, message = hostile_prompts[name]
    refused, body, seconds = post(comfy_server, prompt)
    assert refused and message in body, body[:2000]
    assert seconds < LIVELY, seconds
    assert len(body) < 20_000  # a long value is quoted as a short excerpt, not echoed back


def test_server_keeps_answering_while_hostile_prompts_are_validated(comfy_server, hostile_prompts):
    comfy_server.object_info()  # the first call builds ComfyUI's node list; later ones are what clients see
    answers, stop = [], threading.Event()

    def attack():
        try:
            for _ in range(3):
                for name in NAMES:
                    answers.append((name, *post(comfy_server, hostile_prompts[name][0])))
        finally:
            stop.set()

    attacker = threading.Thread(target=attack)
    attacker.start()
    waits = []
    while not stop.is_set():
        started = time.monotonic()
        comfy_server.get_json("/object_info", timeout=30)
        waits.append(time.monotonic() - started)
    attacker.join()
    assert len(answers) == 3 * len(NAMES) and all(refused for _, refused, _, _ in answers)
    assert waits and max(waits) < LIVELY, f"/object_info took up to {max(waits):.2f} s during validation"
    slowest = max(answers, key=lambda answer: answer[3])
    assert slowest[3] < LIVELY, f"refusing '{slowest[0]}' took {slowest[3]:.2f} s"


def test_edited_inputs_are_refused_when_the_node_runs(comfy_server, random_sd_vae):
    """Inputs only the node itself can check (a report, a SWEEP_INFO, a file name to write) fail the run with
    Latent Lab's message, before any work; the server answers the next client at once."""
    report = json.dumps({"latent": {"shape": [4, 8, 8]}, "flags": {"count": 1, "cells": [{"y": -1, "x": 3}]}})
    cases = {
        "report cell y=-1": (latent_prompt({"class_type": "LatentLabSpotRepair", "output": True, "inputs": {
            "latent": ["empty", 0], "method": "harmonic", "radius": 3, "verify_decodes": 8, "report": report}}),
            "Latent Spot Repair: Flagged cell 1 of the report is at y=-1, x=3, outside"),
        "hand-made SWEEP_INFO": ({
            "image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "grid": {"class_type": "LatentLabSweepGrid", "inputs": {
                "images": ["image", 0], "sweep_info": {"version": 1, "axes": {"y": {}}, "cells": []}, "footer": True,
                "cell_scale": 1.0, "label_size": 0, "max_megapixels": 32.0}}},
            "Sweep Grid: sweep_info has no axis 'x'"),
        "300-character fit file name": ({
            "image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": random_sd_vae}},
            "fit": {"class_type": "LatentLabFitRGBFactors", "inputs": {
                "vae": ["vae", 0], "images": ["image", 0], "target": "vae_decode", "format": "sd15",
                "filename": "n" * 300, "overwrite": False}}},
            "Fit Latent RGB Factors: The file name"),
    }
    for name, (prompt, message) in cases.items():
        started = time.monotonic()
        with pytest.raises(comfy_server.PromptError) as failed:
            comfy_server.run(prompt, timeout=120)
        assert message in str(failed.value), (name, str(failed.value)[:2000])
        assert "LatentLabInputError" in str(failed.value) or "LatentLabError" in str(failed.value), name
        assert time.monotonic() - started < 60, name  # refused before the fit, not after
        started = time.monotonic()
        comfy_server.object_info()
        assert time.monotonic() - started < LIVELY
    assert not os.path.exists(os.path.join(comfy_server.models_dir, "latent_rgb", "n" * 300 + ".safetensors"))
