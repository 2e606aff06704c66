"""The Latent Bridge and Fit Latent Bridge nodes, and the VAE round trip, with test doubles of ComfyUI's VAE."""
import json
import os
import sys
import types

import pytest
import torch

from bridge_doubles import BlockVAE, affine_pair, flat_images
from latent_lab.adapters import bridge_vae, runtime
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import LATENT_FORMAT_KEY, SD15, SDXL
from latent_lab.core.preview import mean_color
from latent_lab.nodes.bridge import BRIDGE_TAG, FitLatentBridge, LatentBridge
from latent_lab.nodes import NODE_CLASS_MAPPINGS

FIT_DEFAULTS = dict(source_format="sdxl", target_format="sd15", directions="both", calibration_images=10,
                    calibration_size=64, augment_views=2, conv_steps=0, learning_rate=1e-3, seed=0,
                    filename="test_bridge", overwrite=False)
BRIDGE_DEFAULTS = dict(method="approximate", source_format="sdxl", target_format="sd15", bridge_file="none",
                       tile_size=512, overlap=64)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_LAB_MODELS_DIR", str(tmp_path))
    return tmp_path


def bridge_node(latent, **changes):
    return LatentBridge().bridge(latent, **{**BRIDGE_DEFAULTS, **changes})["result"]


def fit_node(source_vae, target_vae, **changes):
    return FitLatentBridge().fit(source_vae, target_vae, **{**FIT_DEFAULTS, **changes})["result"]


def test_nodes_are_registered_with_tooltips():
    for key in ("LatentLabBridge", "LatentLabFitBridge"):
        cls = NODE_CLASS_MAPPINGS[key]
        assert cls.CATEGORY == "Latent Lab/Bridge"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{key}.{name} has no tooltip"


# ---- VAE round trip ------------------------------------------------------------------------------------------

def test_roundtrip_is_exact_for_an_identity_pair_and_every_batch_item():
    vae = BlockVAE()
    latent = vae.encode(flat_images(3, 32, seed=1))
    before = latent.clone()
    out = bridge_vae.roundtrip(latent, vae, BlockVAE(), tile_size=0)
    assert torch.allclose(out, latent, atol=1e-5)
    assert torch.equal(latent, before)
    assert [c[0] for c in vae.calls].count("decode") == 3  # one decode per item


def test_roundtrip_between_an_affine_pair_is_that_affine_map():
    a, b, matrix, bias = affine_pair(seed=2)
    latent = a.encode(flat_images(2, 32, seed=3))
    out = bridge_vae.roundtrip(latent, a, b, tile_size=0)
    assert torch.allclose(out, torch.einsum("bchw,ck->bkhw", latent, matrix) + bias.view(1, 4, 1, 1), atol=1e-4)


def test_roundtrip_tiles_large_inputs_with_comfyuis_units():
    source, target = BlockVAE(), BlockVAE()
    latent = source.encode(flat_images(1, 128, seed=0))
    bridge_vae.roundtrip(latent, source, target, tile_size=64, overlap=32)
    assert ("decode_tiled", (8, 8, 2)) in source.calls  # latent cells; overlap capped at a quarter tile (16 px)
    assert ("encode_tiled", (64, 64, 16)) in target.calls  # pixels
    small = BlockVAE()
    bridge_vae.roundtrip(latent, small, BlockVAE(), tile_size=256)
    assert [c[0] for c in small.calls] == ["decode"]


def test_roundtrip_node_output_is_tagged_and_needs_both_vaes():
    vae = BlockVAE()
    latent = {"samples": vae.encode(flat_images(2, 32)), "batch_index": [0, 1]}
    latent_out, info = bridge_node(latent, method="vae_roundtrip", source_vae=vae, target_vae=BlockVAE())
    assert torch.allclose(latent_out["samples"], latent["samples"], atol=1e-5)
    assert latent_out[LATENT_FORMAT_KEY] == "sd15"
    assert latent_out[BRIDGE_TAG] == {"method": "vae_roundtrip", "source": "sdxl", "target": "sd15"}
    assert latent_out["batch_index"] == [0, 1]
    assert "vae_roundtrip" in info
    with pytest.raises(LatentLabInputError, match="Latent Bridge: vae_roundtrip needs both VAEs"):
        bridge_node(latent, method="vae_roundtrip", source_vae=vae)


def test_roundtrip_node_refuses_a_vae_of_the_wrong_channel_count():
    vae = BlockVAE()
    latent = {"samples": torch.randn(1, 4, 4, 4)}
    wide = BlockVAE()
    wide.latent_channels = 16
    with pytest.raises(LatentLabInputError, match="16-channel"):
        bridge_node(latent, method="vae_roundtrip", source_vae=wide, target_vae=vae)
    with pytest.raises(LatentLabInputError, match="target VAE makes 16-channel"):
        bridge_node(latent, method="vae_roundtrip", source_vae=vae, target_vae=wide)


# ---- approximate node ----------------------------------------------------------------------------------------

def test_approximate_node_keeps_mean_colors_and_leaves_the_input_alone():
    samples = SDXL.to_raw(torch.randn(2, 4, 8, 8))
    latent = {"samples": samples, "noise_mask": torch.ones(2, 1, 64, 64)}
    before = samples.clone()
    latent_out, _ = bridge_node(latent)
    assert torch.equal(latent["samples"], before) and set(latent) == {"samples", "noise_mask"}
    assert latent_out["samples"].shape == samples.shape
    assert latent_out[LATENT_FORMAT_KEY] == "sd15" and latent_out[BRIDGE_TAG]["method"] == "approximate"
    assert torch.allclose(mean_color(latent_out["samples"], SD15.rgb_affine()),
                          mean_color(samples, SDXL.rgb_affine()), atol=2e-3)
    assert "noise_mask" in latent_out


def test_format_and_channel_mismatches_are_clear():
    with pytest.raises(LatentLabInputError, match="16 channels but the SDXL format has 4"):
        bridge_node({"samples": torch.randn(1, 16, 4, 4)})
    with pytest.raises(LatentLabInputError, match="ambiguous.*Set source_format"):
        bridge_node({"samples": torch.randn(1, 4, 4, 4)}, source_format="auto")
    out, _ = bridge_node({"samples": torch.randn(1, 4, 4, 4), LATENT_FORMAT_KEY: "sd15"},
                         source_format="auto", target_format="sdxl")
    assert out[BRIDGE_TAG]["source"] == "sd15"
    with pytest.raises(LatentLabInputError, match="not a ComfyUI latent"):
        bridge_node({"latent": torch.randn(1, 4, 4, 4)})


# ---- fit node + fitted bridge ---------------------------------------------------------------------------------

def test_fit_then_bridge_recovers_the_relation_both_ways(models_dir):
    a, b, matrix, bias = affine_pair(seed=4)
    images = flat_images(4, 48, seed=5) * 0.5 + torch.rand(4, 48, 48, 3, generator=torch.Generator().manual_seed(1)) * 0.25
    report, comparison = fit_node(a, b, images=images)
    entries = json.loads(report)["files"]
    names = sorted(e["file"] for e in entries)
    assert names == ["test_bridge_sd15_to_sdxl_affine.safetensors", "test_bridge_sdxl_to_sd15_affine.safetensors"]
    assert sorted(os.listdir(models_dir / "latent_bridges")) == names
    for entry in entries:
        assert entry["held_out_latent_relative_mse"] < 1e-8
        assert entry["held_out_pixel_psnr_db"] == "inf" or entry["held_out_pixel_psnr_db"] > 60
        assert entry["roundtrip_pixel_psnr_db"] == "inf" or entry["roundtrip_pixel_psnr_db"] > 60
        assert entry["held_out_images"] == 1 + 2  # a fifth of the 4 images, and of the 10 calibration images
        assert entry["train_items"] == (3 + 8) * 2  # two views each
    assert comparison.shape[0] == 2 and comparison.shape[2] == 3 * comparison.shape[1]  # ref | affine | round trip

    assert "test_bridge_sdxl_to_sd15_affine.safetensors" in LatentBridge.INPUT_TYPES()["required"]["bridge_file"][0]
    assert LatentBridge.VALIDATE_INPUTS("fitted", "test_bridge_sdxl_to_sd15_affine.safetensors") is True
    latent = {"samples": a.encode(images)}
    before = latent["samples"].clone()
    forward, info = bridge_node(latent, method="fitted", bridge_file="test_bridge_sdxl_to_sd15_affine.safetensors")
    expected = torch.einsum("bchw,ck->bkhw", latent["samples"], matrix) + bias.view(1, 4, 1, 1)
    assert torch.allclose(forward["samples"], expected, atol=1e-3)
    assert torch.equal(latent["samples"], before)
    assert forward[BRIDGE_TAG] == {"method": "fitted", "target": "sd15", "source": "sdxl",
                                   "file": "test_bridge_sdxl_to_sd15_affine.safetensors"}
    assert "held-out pixel PSNR" in info
    back, _ = bridge_node(forward, method="fitted", source_format="auto", target_format="sdxl",
                          bridge_file="test_bridge_sd15_to_sdxl_affine.safetensors")
    assert torch.allclose(back["samples"], latent["samples"], atol=1e-3)


def test_fitted_bridge_errors(models_dir):
    a, b, _, _ = affine_pair(seed=4)
    fit_node(a, b, directions="source_to_target", calibration_images=5)
    name = "test_bridge_sdxl_to_sd15_affine.safetensors"
    latent = {"samples": torch.randn(1, 4, 4, 4)}
    with pytest.raises(LatentLabInputError, match="bridges SDXL -> SD1.x/2.x, but this node is set to SD1.x/2.x -> SDXL"):
        bridge_node(latent, method="fitted", bridge_file=name, source_format="sd15", target_format="sdxl")
    with pytest.raises(LatentLabInputError, match="No fitted .* file was chosen"):
        bridge_node(latent, method="fitted")
    missing = LatentBridge.VALIDATE_INPUTS("fitted", "shared_by_a_friend.safetensors")
    assert "not in models/latent_bridges/" in missing and "Fit Latent Bridge" in missing
    assert "not a plain file name" in LatentBridge.VALIDATE_INPUTS("fitted", "../../secret.safetensors")
    assert LatentBridge.VALIDATE_INPUTS("approximate", "whatever") is True
    assert "Unknown method" in LatentBridge.VALIDATE_INPUTS("magic", "none")
    (models_dir / "latent_bridges" / "broken.safetensors").write_bytes(b"nonsense")
    assert "Could not read" in LatentBridge.VALIDATE_INPUTS("fitted", "broken.safetensors")


def test_fit_node_refusals(models_dir):
    a, b, _, _ = affine_pair(seed=4)
    with pytest.raises(LatentLabInputError, match="at least 2 images"):
        fit_node(a, b, calibration_images=1)
    with pytest.raises(LatentLabInputError, match="Both directions need two different formats"):
        fit_node(a, b, target_format="sdxl")
    wide = BlockVAE()
    wide.latent_channels = 16
    with pytest.raises(LatentLabInputError, match="target VAE makes 16-channel"):
        fit_node(a, wide)
    with pytest.raises(LatentLabInputError, match="not a valid file name"):
        fit_node(a, b, filename="../escape")
    with pytest.raises(LatentLabInputError, match="16x16 pixels, too small") as caught:
        fit_node(a, b, images=torch.rand(3, 16, 16, 3))
    assert "at least 32x32" in caught.value.fix
    with pytest.raises(LatentLabInputError, match="No filename was given"):
        fit_node(a, b, filename="  ")
    fit_node(a, b, directions="source_to_target", calibration_images=3)
    with pytest.raises(LatentLabInputError, match="already exists"):
        fit_node(a, b, directions="source_to_target", calibration_images=3)
    fit_node(a, b, directions="source_to_target", calibration_images=3, overwrite=True)


def test_fit_node_with_conv_saves_both_kinds_under_comfyuis_inference_mode(models_dir):
    a, b, _, _ = affine_pair(seed=4)
    with torch.inference_mode():  # ComfyUI executes every node inside inference mode
        report, comparison = fit_node(a, b, directions="source_to_target", calibration_images=4, conv_steps=3)
    entries = json.loads(report)["files"]
    assert [e["kind"] for e in entries] == ["affine", "conv"]
    assert entries[1]["conv_steps"] == 3 and entries[1]["parameters"] <= 1_500_000
    assert comparison.shape[2] == 4 * comparison.shape[1]
    latent = {"samples": a.encode(flat_images(1, 32))}
    with torch.inference_mode():
        out, _ = bridge_node(latent, method="fitted", bridge_file="test_bridge_sdxl_to_sd15_conv.safetensors")
    assert out["samples"].shape == latent["samples"].shape


class Interrupted(Exception):
    pass


@pytest.fixture
def fake_comfy(monkeypatch):
    """A stand-in for ComfyUI's model_management whose Cancel button is pressed after `budget` checks."""
    state = {"checks": 0, "budget": 10 ** 9}

    def throw():
        state["checks"] += 1
        if state["checks"] > state["budget"]:
            raise Interrupted

    management = types.SimpleNamespace(
        throw_exception_if_processing_interrupted=throw, get_torch_device=lambda: torch.device("cpu"),
        intermediate_device=lambda: torch.device("cpu"), soft_empty_cache=lambda: None)
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.model_management", management)
    runtime.comfy.cache_clear()
    yield state
    runtime.comfy.cache_clear()


def test_an_interrupted_fit_saves_nothing(models_dir, fake_comfy):
    """Cancel at the very last check (measuring the second direction): the first direction's files are not
    written either."""
    a, b, _, _ = affine_pair(seed=4)
    run = dict(directions="both", calibration_images=3, conv_steps=2)
    fit_node(a, b, filename="probe", **run)
    fake_comfy.update(checks=0, budget=fake_comfy["checks"] - 1)
    with pytest.raises(Interrupted):
        fit_node(a, b, **run)
    assert not any(n.startswith("test_bridge") for n in os.listdir(models_dir / "latent_bridges"))
    fake_comfy.update(checks=0, budget=10 ** 9)
    fit_node(a, b, **run)
    assert sum(n.startswith("test_bridge") for n in os.listdir(models_dir / "latent_bridges")) == 4


@pytest.mark.parametrize("filename, message", [("b" * 300, "bytes long; file names may have at most 255"),
                                               ("x" * 230, "bytes long"),  # fits alone, not with the suffix
                                               ("con.", None), ("aux.v2", None)])
def test_fit_node_refuses_unusable_names_before_any_work(models_dir, filename, message):
    a, b, _, _ = affine_pair(seed=4)
    with pytest.raises(LatentLabInputError, match="Fit Latent Bridge: ") as caught:
        fit_node(a, b, filename=filename)
    assert (message or "reserved device name") in str(caught.value) and len(str(caught.value)) < 400
    assert a.calls == [] and b.calls == []
    assert not (models_dir / "latent_bridges").exists() or os.listdir(models_dir / "latent_bridges") == []


def test_validate_inputs_reads_only_the_header_of_a_bridge_file(models_dir):
    a, b, _, _ = affine_pair(seed=4)
    fit_node(a, b, directions="source_to_target", calibration_images=3)
    path = models_dir / "latent_bridges" / "test_bridge_sdxl_to_sd15_affine.safetensors"
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    path.write_bytes(data[:header])  # the tensors are gone: only running the node can tell
    assert LatentBridge.VALIDATE_INPUTS("fitted", path.name) is True
    with pytest.raises(LatentLabInputError, match="Latent Bridge: Could not read"):
        bridge_node({"samples": torch.randn(1, 4, 4, 4)}, method="fitted", bridge_file=path.name)
    huge = {"type": "conv", "in_channels": 4, "out_channels": 4, "width": 512, "blocks": 64}
    from safetensors.torch import save_file
    save_file({"weight": torch.eye(4)}, str(models_dir / "latent_bridges" / "huge.safetensors"),
              metadata={"latent_lab": "latent_bridge", "source_format": "sdxl", "target_format": "sd15",
                        "architecture": json.dumps(huge)})
    assert "the limit is 1,500,000" in LatentBridge.VALIDATE_INPUTS("fitted", "huge.safetensors")
