import math
import os

import pytest
import torch
from safetensors.torch import save_file

import doubles
from latent_lab.core import factor_fit
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.factor_files import load_factors, save_factors
from latent_lab.core.formats import RgbAffine
from latent_lab.nodes.fit_factors import FitLatentRGBFactors
from latent_lab.nodes.see import LatentRGBPreview


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_LAB_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_fit_recovers_a_known_linear_decoder():
    vae = doubles.LinearVAE(seed=3)
    latents = vae.encode(doubles.varied_images(6))
    targets = factor_fit.area_average(vae.decode(latents), *latents.shape[2:])
    affine, report = factor_fit.fit_factors(latents, targets)
    assert torch.allclose(affine.weight, vae.weight, atol=1e-4)
    assert torch.allclose(affine.bias, vae.bias, atol=1e-4)
    assert report["held_out_psnr_db"] > 60 and report["images"] == 6


def test_fit_reports_a_real_error_when_the_map_is_not_linear():
    vae = doubles.LinearVAE(seed=3)
    images = doubles.varied_images(5)
    latents = vae.encode(images)
    targets = factor_fit.area_average(images ** 2, *latents.shape[2:])
    _, report = factor_fit.fit_factors(latents, targets)
    assert 10 < report["held_out_psnr_db"] < 60
    assert report["rms_error"] > 1e-3


def test_single_image_holds_out_cells():
    vae = doubles.LinearVAE()
    latents = vae.encode(doubles.varied_images(1, size=128))
    targets = factor_fit.area_average(vae.decode(latents), 16, 16)
    _, report = factor_fit.fit_factors(latents, targets)
    assert 0 < report["held_out_cells"] < report["cells"] == 256


def test_psnr_by_hand():
    assert factor_fit.psnr(torch.zeros(4), torch.full((4,), 0.1)) == pytest.approx(20.0)
    assert math.isinf(factor_fit.psnr(torch.ones(3), torch.ones(3)))


def test_fit_node_saves_a_file_the_preview_lists_and_uses(models_dir):
    vae = doubles.LinearVAE(seed=1)
    images = doubles.varied_images(4)
    before = images.clone()
    FitLatentRGBFactors().fit(vae, images, "vae_decode", "unknown", "linear vae", False)
    assert torch.equal(images, before)
    path = models_dir / "latent_rgb" / "linear vae.safetensors"
    affine, metadata = load_factors(str(path))
    assert torch.allclose(affine.weight, vae.weight, atol=1e-4)
    assert metadata["channels"] == "4" and metadata["format"] == "unknown"
    assert "linear vae.safetensors" in LatentRGBPreview.INPUT_TYPES()["required"]["factors"][0]

    latent = {"samples": vae.encode(images)}
    shown = LatentRGBPreview().preview(latent, "auto", "linear vae.safetensors", "latent", "nearest")["result"][0]
    expected = vae.decode(latent["samples"])[:, ::8, ::8].clamp(0, 1)
    assert torch.allclose(shown, expected, atol=1e-4)


def test_fit_node_refuses_to_overwrite_and_leaves_the_old_file(models_dir):
    vae = doubles.LinearVAE()
    images = doubles.varied_images(3)
    FitLatentRGBFactors().fit(vae, images, "input_images", "sd15", "mine", False)
    path = models_dir / "latent_rgb" / "mine.safetensors"
    stamp = path.stat().st_mtime_ns
    with pytest.raises(LatentLabInputError, match="Fit Latent RGB Factors: .*already exists"):
        FitLatentRGBFactors().fit(vae, images, "input_images", "sd15", "mine", False)
    assert path.stat().st_mtime_ns == stamp
    assert sorted(os.listdir(path.parent)) == ["mine.safetensors"]


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", ".hidden", ""])
def test_fit_node_refuses_names_that_leave_the_folder(models_dir, name):
    with pytest.raises(LatentLabInputError, match="Fit Latent RGB Factors"):
        FitLatentRGBFactors().fit(doubles.LinearVAE(), doubles.varied_images(2), "input_images", "sd15", name, False)


def test_fit_node_rejects_alpha_images(models_dir):
    rgba = torch.rand(2, 64, 64, 4)
    with pytest.raises(LatentLabInputError, match="4 channels; RGB"):
        FitLatentRGBFactors().fit(doubles.LinearVAE(), rgba, "input_images", "sd15", "x", False)


def test_factor_files_reject_wrong_shapes_and_kinds(tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file({"weight": torch.zeros(4, 2), "bias": torch.zeros(3)}, str(bad))
    with pytest.raises(LatentLabInputError, match="shape"):
        load_factors(str(bad))
    not_safetensors = tmp_path / "factors.pt"
    not_safetensors.write_bytes(b"\x80\x04pickle")
    with pytest.raises(LatentLabInputError, match="not a .safetensors file"):
        load_factors(str(not_safetensors))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"nonsense")
    with pytest.raises(LatentLabInputError, match="Could not read"):
        load_factors(str(garbage))
    good = tmp_path / "good.safetensors"
    save_factors(str(good), RgbAffine(torch.ones(4, 3), torch.zeros(3)), {"format": "sd15"})
    assert load_factors(str(good))[1]["format"] == "sd15"


class RecordingVAE(doubles.LinearVAE):
    """The linear VAE double, noting every encode and decode: work that a refused input must not start."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def encode(self, images):
        self.calls += 1
        return super().encode(images)

    def decode(self, latents):
        self.calls += 1
        return super().decode(latents)


@pytest.mark.parametrize("name, message", [("a" * 300, "bytes long; file names may have at most 255"),
                                           ("con", "reserved device name"), ("LPT3.rgb", "reserved device name")])
def test_fit_node_refuses_unusable_names_before_any_work(models_dir, name, message):
    vae = RecordingVAE()
    with pytest.raises(LatentLabInputError, match=f"Fit Latent RGB Factors: .*{message}") as caught:
        FitLatentRGBFactors().fit(vae, doubles.varied_images(2), "vae_decode", "sd15", name, False)
    assert vae.calls == 0 and len(str(caught.value)) < 400
    assert not (models_dir / "latent_rgb").exists() or os.listdir(models_dir / "latent_rgb") == []


def test_factor_files_are_checked_from_their_header(tmp_path):
    extra = tmp_path / "extra.safetensors"
    save_file({"weight": torch.zeros(4, 3), "bias": torch.zeros(3), "other": torch.zeros(1)}, str(extra))
    with pytest.raises(LatentLabInputError, match="does not use: other"):
        load_factors(str(extra))
    ints = tmp_path / "ints.safetensors"
    save_file({"weight": torch.zeros(4, 3, dtype=torch.int64), "bias": torch.zeros(3)}, str(ints))
    with pytest.raises(LatentLabInputError, match="not floats"):
        load_factors(str(ints))
    wide = tmp_path / "wide.safetensors"
    save_file({"weight": torch.zeros(2000, 3), "bias": torch.zeros(3)}, str(wide))
    with pytest.raises(LatentLabInputError, match="1 to 1024 channels"):
        load_factors(str(wide))
    huge = tmp_path / "huge.safetensors"
    with open(huge, "wb") as handle:
        handle.truncate(2 ** 31)  # a sparse 2 GiB file
    with pytest.raises(LatentLabInputError, match="2048.0 MiB; Latent Lab's RGB factor files are at most"):
        load_factors(str(huge))
