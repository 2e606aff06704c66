"""Bridge files: save/load round trips and clear errors for anything else."""
import json
import math
import os

import pytest
import torch
from safetensors.torch import save_file

from latent_lab.core import bridge as bridges
from latent_lab.core.bridge_files import MAX_FILE_BYTES, describe, inspect_bridge, load_bridge, save_bridge
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


ARCHITECTURES = [{"type": "affine", "in_channels": 4, "out_channels": 16},
                 {"type": "conv", "in_channels": 16, "out_channels": 4, "width": 8, "blocks": 0},
                 {"type": "conv", "in_channels": 4, "out_channels": 4, "width": 12, "blocks": 3}]


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: f"{a['type']}-{a.get('blocks')}")
def test_shapes_from_the_architecture_are_the_built_bridges(architecture):
    built = {k: tuple(v.shape) for k, v in bridges.build(architecture).state_dict().items()}
    assert bridges.architecture_shapes(architecture) == built
    assert sum(math.prod(s) for s in built.values()) == bridges.parameter_count(bridges.build(architecture))


def test_a_huge_architecture_is_refused_from_its_description():
    huge = {"type": "conv", "in_channels": 4, "out_channels": 4, "width": 512, "blocks": 64}  # 302M numbers
    with pytest.raises(LatentLabInputError, match=r"302,\d{3},\d{3} parameters; the limit is 1,500,000"):
        bridges.check_architecture(huge)
    with pytest.raises(LatentLabInputError, match="limit is"):
        bridges.build(huge)


def bridge_metadata(**change):
    return {"latent_lab": "latent_bridge", "source_format": "sd15", "target_format": "sdxl",
            "architecture": json.dumps({"type": "affine", "in_channels": 4, "out_channels": 4}), **change}


@pytest.mark.parametrize("architecture, message", [
    ("[" * 100_000 + "]" * 100_000, "architecture entry of 200,000 characters"),
    ("[" * 500 + "]" * 500, "no architecture description"),
    ("{" + '"a":' * 2000 + "1" + "}" * 2000, "architecture entry of"),
    (json.dumps({"type": "affine", "in_channels": True, "out_channels": 4}), "'in_channels' is True"),
    (json.dumps({"type": "affine", "in_channels": 4.0, "out_channels": 4}), "'in_channels' is 4.0"),
    (json.dumps({"type": "x" * 900, "in_channels": 4, "out_channels": 4}), "Unknown bridge type xxx"),
    (json.dumps([1, 2]), "no architecture description"),
], ids=["deep-100k", "deep-500", "deep-dict", "bool", "float", "long-type", "list"])
def test_hostile_architecture_entries_get_clear_errors(tmp_path, architecture, message):
    path = str(tmp_path / "bridge.safetensors")
    save_file({"weight": torch.eye(4), "bias": torch.zeros(4)}, path, metadata=bridge_metadata(architecture=architecture))
    with pytest.raises(LatentLabInputError, match=message) as caught:
        load_bridge(path)
    assert len(str(caught.value)) < 400


def test_the_header_is_checked_before_tensors_are_read(tmp_path):
    path = tmp_path / "bridge.safetensors"
    save_bridge(str(path), bridges.AffineBridge(4, 4), "sd15", "sdxl", {})
    data = path.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    path.write_bytes(data[:header] + b"\xff" * (len(data) - header - 1))  # tensor data cut short
    assert inspect_bridge(str(path))["architecture"]["type"] == "affine"
    with pytest.raises(LatentLabInputError, match="Could not read"):
        load_bridge(str(path))


def raw_file(path, header: bytes, length=None, data=b""):
    length = len(header) if length is None else length
    path.write_bytes(length.to_bytes(8, "little") + header + data)
    return str(path)


def test_hostile_headers_get_clear_errors(tmp_path):
    cases = [
        (raw_file(tmp_path / "short.safetensors", b"{}", length=10 ** 12), "header is missing or larger"),
        (raw_file(tmp_path / "nested.safetensors", b"[" * 100_000 + b"]" * 100_000), "larger than|nested"),
        (raw_file(tmp_path / "deep.safetensors", b"[" * 5000 + b"]" * 5000), "nested too deeply"),
        (raw_file(tmp_path / "list.safetensors", b"[1]"), "not a JSON object"),
        (raw_file(tmp_path / "meta.safetensors", json.dumps({"__metadata__": {"a": [1]}}).encode()), "table of texts"),
        (raw_file(tmp_path / "shape.safetensors", json.dumps({"w": {"dtype": "F32", "shape": [-1],
                                                                     "data_offsets": [0, 0]}}).encode()), "valid shape"),
        (raw_file(tmp_path / "ints.safetensors", json.dumps({"w": {"dtype": "I64", "shape": [1],
                                                                    "data_offsets": [0, 8]}}).encode(), data=b"\0" * 8),
         "not floats"),
        (str(tmp_path / "tiny.safetensors"), "header is missing"),
    ]
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    for path, message in cases:
        with pytest.raises(LatentLabInputError, match=message) as caught:
            inspect_bridge(path)
        assert len(str(caught.value)) < 400, path


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk space used
    with pytest.raises(LatentLabInputError, match="MiB; Latent Lab's latent bridge files are at most"):
        load_bridge(str(path))


def test_describe_counts_parameters_from_the_architecture_not_the_files_claim(tmp_path):
    path = str(tmp_path / "bridge.safetensors")
    save_file({"weight": torch.eye(4), "bias": torch.zeros(4)}, path,
              metadata=bridge_metadata(parameters="9" * 5000, held_out_pixel_psnr_db="x" * 5000))
    _, metadata = load_bridge(path)
    line = describe(metadata)
    assert "20 parameters" in line and len(line) < 300
