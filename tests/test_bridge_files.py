"""Bridge files: save/load round trips and clear errors for anything else."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from latent_lab.core import bridge as bridges
from latent_lab.core.bridge_files import describe, load_bridge, save_bridge
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.factor_files import save_factors
from latent_lab.core.formats import SD15

REPORT = {"held_out_latent_mse": 0.01, "held_out_latent_relative_mse": 0.002, "held_out_pixel_psnr_db": 31.5,
          "roundtrip_pixel_psnr_db": 33.25, "train_cells": 4096, "held_out_images": 3}


def trained_conv():
    conv = bridges.ConvBridge(4, 4, width=8, blocks=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in conv.state_dict().values():
            value.copy_(torch.randn(value.shape, generator=generator).abs() + 0.1)
    return conv


def test_affine_and_conv_files_round_trip_with_their_report(tmp_path):
    latent = torch.randn(2, 4, 5, 7)
    for bridge in (bridges.fit_affine([(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))]), trained_conv()):
        path = str(tmp_path / f"{bridge.architecture()['type']}.safetensors")
        save_bridge(path, bridge, "sd15", "sdxl", REPORT)
        loaded, metadata = load_bridge(path)
        assert type(loaded) is type(bridge)
        assert torch.allclose(loaded(latent), bridge(latent))
        assert metadata["direction"] == "sd15->sdxl"
        assert metadata["architecture"] == bridge.architecture()
        assert float(metadata["held_out_pixel_psnr_db"]) == 31.5
        assert float(metadata["roundtrip_pixel_psnr_db"]) == 33.25
        assert int(metadata["parameters"]) == bridges.parameter_count(bridge)
        assert "31.50 dB" in describe(metadata) and "33.25 dB" in describe(metadata)
    assert sorted(os.listdir(tmp_path)) == ["affine.safetensors", "conv.safetensors"]  # no temporary left


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "bridge.ckpt"
    path.write_bytes(b"not a tensor file")
    with pytest.raises(LatentLabInputError, match="not a .safetensors file"):
        load_bridge(str(path))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(LatentLabInputError, match="Could not read"):
        load_bridge(str(garbage))


def test_a_mis_shaped_file_is_refused(tmp_path):
    path = str(tmp_path / "bridge.safetensors")
    save_bridge(path, bridges.AffineBridge(4, 4), "sd15", "sdxl", {})
    tensors = {"weight": torch.zeros(4, 3), "bias": torch.zeros(4)}
    metadata = {"latent_lab": "latent_bridge", "source_format": "sd15", "target_format": "sdxl",
                "architecture": json.dumps({"type": "affine", "in_channels": 4, "out_channels": 4})}
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(LatentLabInputError, match=r"shape \(4, 3\), expected \(4, 4\)"):
        load_bridge(path)


@pytest.mark.parametrize("change, message", [
    ({"latent_lab": "rgb_factors"}, "not a Latent Lab bridge file"),
    ({"source_format": "sd9"}, "unknown source format"),
    ({"architecture": "{not json"}, "unreadable architecture"),
    ({"architecture": json.dumps({"type": "affine", "in_channels": 16, "out_channels": 4})}, "does not fit"),
    ({"architecture": json.dumps({"type": "conv", "in_channels": 4, "out_channels": 4, "width": 256, "blocks": 8})},
     "limit is"),
])
def test_bad_metadata_is_refused(tmp_path, change, message):
    path = str(tmp_path / "bridge.safetensors")
    metadata = {"latent_lab": "latent_bridge", "source_format": "sd15", "target_format": "sdxl",
                "architecture": json.dumps({"type": "affine", "in_channels": 4, "out_channels": 4}), **change}
    save_file({"weight": torch.eye(4), "bias": torch.zeros(4)}, path, metadata=metadata)
    with pytest.raises(LatentLabInputError, match=message):
        load_bridge(path)


def test_an_rgb_factor_file_is_not_a_bridge(tmp_path):
    path = str(tmp_path / "factors.safetensors")
    save_factors(path, SD15.rgb_affine(), {})
    with pytest.raises(LatentLabInputError, match="not a Latent Lab bridge file"):
        load_bridge(path)


def test_extra_or_non_finite_tensors_are_refused(tmp_path):
    path = str(tmp_path / "bridge.safetensors")
    metadata = {"latent_lab": "latent_bridge", "source_format": "sd15", "target_format": "sdxl",
                "architecture": json.dumps({"type": "affine", "in_channels": 4, "out_channels": 4})}
    save_file({"weight": torch.eye(4), "bias": torch.zeros(4), "head.weight": torch.zeros(1)}, path, metadata=metadata)
    with pytest.raises(LatentLabInputError, match="does not use"):
        load_bridge(path)
    save_file({"weight": torch.full((4, 4), float("nan")), "bias": torch.zeros(4)}, path, metadata=metadata)
    with pytest.raises(LatentLabInputError, match="NaN"):
        load_bridge(path)
