"""VAE anomaly probe, one run (core/probe.py, core/probe_report.py): every mode end to end, the report and verdict,
the resolution scan, and inputs refused before any work."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import probe_doubles as D
from probe_doubles import flawed, healthy  # noqa: F401  (fixtures)
from latent_lab.core import probe as P
from latent_lab.core import probe_far_field as FF
from latent_lab.core import probe_report as R
from latent_lab.core.errors import LatentLabInputError

def probe_vae(model, precise=False, **extra):
    return P.ProbeVAE(**D.plain_callables(model, precise=precise), max_batch=64, **extra)


def planted(model, image) -> tuple:
    return model.planted_cell(image.movedim(-1, 1))


def test_planted_cell_is_top_in_flags_and_both_influence_modes_over_20_images(flawed):
    vae = probe_vae(flawed)
    for i, image in enumerate(D.images_over_sizes(20, seed=100)):
        truth = planted(flawed, image)
        verify = P.probe(vae, image, P.ProbeOptions(mode="verify", seed=i))
        flags = verify.report["flags"]["cells"]
        assert (flags[0]["y"], flags[0]["x"]) == truth, (i, image.shape)
        assert flags[0]["reasons"] == ["logvar", "magnitude"]
        measured = verify.report["influence"]["cells"] + verify.report["influence"]["samples"]
        best = max(measured, key=lambda c: c["ratio"])
        assert (best.get("y"), best.get("x")) == truth and best["ratio"] > 20, (i, best)
        mapped = P.probe(vae, image, P.ProbeOptions(mode="map", seed=i))
        assert divmod(int(mapped.influence.argmax()), mapped.influence.shape[1]) == truth, (i, image.shape)
        assert mapped.report["influence"]["decoder_equivalent_passes"] <= 24


def test_pass_counts_are_honest(flawed):
    decoded = []
    callables = D.plain_callables(flawed)

    def counting_decode(latent):
        decoded.append(latent.shape[0])
        return callables["decode"](latent)
    vae = P.ProbeVAE(callables["encode_moments"], counting_decode, max_batch=3)
    image = D.random_images(1, 96, seed=2)
    report = P.probe(vae, image, P.ProbeOptions(mode="verify", verify_decodes=7)).report
    assert sum(decoded) == report["influence"]["decoder_equivalent_passes"] == 7
    decoded.clear()
    report = P.probe(vae, image, P.ProbeOptions(mode="map", map_passes=13)).report
    assert decoded == [1]
    assert report["influence"]["estimator"]["backward_passes"] == 6
    assert report["influence"]["decoder_equivalent_passes"] == 1 + 6 * FF.BACKWARD_PASSES <= 13
    decoded.clear()
    report = P.probe(vae, D.random_images(1, 32, seed=2), P.ProbeOptions(mode="brute", radius=1)).report
    assert sum(decoded) == report["influence"]["decoder_equivalent_passes"] == 2 * 4 * 16


def test_report_keys_verdict_and_determinism(flawed):
    vae = probe_vae(flawed)
    image = D.random_images(2, (100, 140), seed=5)
    options = P.ProbeOptions(mode="map", seed=3, scan_sizes=(96, 160), image_index=1)
    first = P.probe(vae, image, options).report
    second = P.probe(vae, image, options).report
    assert set(first) == set(R.REPORT_KEYS)
    assert first["image"] == {"input_size": [100, 140], "probed_size": [96, 136], "crop_offset": [2, 2], "image_index": 1}
    assert first["latent"] == {"shape": [4, 12, 17], "downscale": 8}
    cell = first["flags"]["cells"][0]
    assert cell["pixel_box"] == [2 + 8 * cell["y"], 2 + 8 * cell["x"], 10 + 8 * cell["y"], 10 + 8 * cell["x"]]
    assert first["verdict"].startswith(f"1 anomalous cell at ({cell['y']}, {cell['x']}): logvar -40.0")
    assert "x median" in first["verdict"]
    assert any("item 1" in note for note in first["notes"])
    for key in ("flags", "resolutions", "verdict"):
        assert first[key] == second[key]
    assert [row["latent"] for row in first["resolutions"]] == [[8, 12], [14, 20]]  # longer side 96 and 160 px


def test_logvar_is_reported_before_the_clamp(flawed):
    report = P.probe(probe_vae(flawed), D.random_images(1, 96, seed=4), P.ProbeOptions()).report
    assert report["moments"]["logvar_channel_mean"]["min"] == pytest.approx(D.PLANTED_LOGVAR)
    assert report["moments"]["logvar_read"].startswith("before")


def test_resolution_scan_finds_the_cell_at_every_size(flawed):
    image = D.random_images(1, 160, seed=21)
    options = P.ProbeOptions(scan_sizes=(64, 96, 128, 160))
    rows = P.probe(probe_vae(flawed), image, options).report["resolutions"]
    assert [row["size"] for row in rows] == [[64, 64], [96, 96], [128, 128], [160, 160]]
    for row in rows:
        pixels = P.resized(image, row["size"])
        assert row["flag_count"] == 1
        assert (row["cells"][0]["y"], row["cells"][0]["x"]) == flawed.planted_cell(pixels)
        assert row["min_logvar"] == pytest.approx(D.PLANTED_LOGVAR)


def test_vae_without_logvar_gets_a_note_and_magnitude_flags(flawed):
    callables = D.plain_callables(flawed, with_logvar=False)
    image = D.random_images(1, 96, seed=8)
    result = P.probe(P.ProbeVAE(**callables), image, P.ProbeOptions(mode="verify"))
    assert result.logvar is None and result.stats.logvar is None
    assert any("no log-variance" in note for note in result.report["notes"])
    first = result.report["flags"]["cells"][0]
    assert (first["y"], first["x"]) == planted(flawed, image) and first["reasons"] == ["magnitude"]
    assert result.report["moments"]["logvar_read"] is None


def test_no_flags_verdict_names_the_most_extreme_cell(healthy):
    report = P.probe(probe_vae(healthy), D.random_images(1, 96, seed=9), P.ProbeOptions()).report
    assert report["flags"]["count"] == 0
    assert report["verdict"].startswith("No anomalous cells") and "most extreme cell" in report["verdict"]


@pytest.mark.parametrize("mode", ["verify", "map"])
def test_a_decoder_with_no_far_field_gets_finite_ratios(mode, flawed):
    def local_decode(latent):  # each cell paints only its own 8x8 pixels: nothing reaches the far field
        return torch.sigmoid(F.interpolate(latent[:, :3], scale_factor=8, mode="nearest"))
    vae = P.ProbeVAE(encode_moments=D.plain_callables(flawed)["encode_moments"], decode=local_decode, max_batch=64)
    report = P.probe(vae, D.random_images(1, 96, seed=5), P.ProbeOptions(mode=mode)).report
    assert report["influence"]["median"] == 0
    assert all(math.isfinite(cell["ratio"]) for cell in report["influence"]["cells"])


def test_inputs_are_not_mutated(flawed):
    image = D.random_images(1, 96, seed=3)
    copy = image.clone()
    result = P.probe(probe_vae(flawed), image, P.ProbeOptions(mode="map"))
    assert torch.equal(image, copy)
    mean = result.mean.clone()
    FF.far_field_verify(probe_vae(flawed).decode, result.mean, [(0, 0)], torch.zeros(12, 12, dtype=torch.bool), 3)
    assert torch.equal(result.mean, mean)


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("image,message", [
    (torch.rand(1, 1, 1, 3), "needs at least 64x64 px"),
    (torch.rand(1, 96, 96, 4), "4 channels; RGB"),
    (torch.full((1, 96, 96, 3), float("nan")), "NaN"),
    (torch.rand(96, 96, 3), "batch, height, width, channels"),
])
def test_bad_images_get_clear_errors(image, message, flawed):
    with pytest.raises(LatentLabInputError, match=message):
        P.probe(probe_vae(flawed), image, P.ProbeOptions())


def test_oversized_image_is_refused_with_a_size_that_fits(flawed):
    budget = 200_000

    def needed(height, width, mode):
        return height * width * (8 if mode == "map" else 2)
    vae = probe_vae(flawed, bytes_needed=needed, room=lambda _: budget, where="the test device")
    with pytest.raises(LatentLabInputError, match="never tiles") as refused:
        P.probe(vae, D.random_images(1, 256, seed=1), P.ProbeOptions(mode="map"))
    text = str(refused.value)
    assert "the test device" in text
    width, height = (int(v) for v in text.split("Resize the image to about ")[1].split(" px")[0].split("x"))
    assert needed(height, width, "map") <= budget and height >= 64
    P.probe(vae, D.random_images(1, (height, width), seed=1), P.ProbeOptions(mode="map"))


def test_mismatched_vaes_get_clear_errors(flawed):
    callables = D.plain_callables(flawed)
    image = D.random_images(1, 96, seed=1)
    wrong_decoder = P.ProbeVAE(callables["encode_moments"], lambda z: callables["decode"](z)[:, :, ::2, ::2])
    with pytest.raises(LatentLabInputError, match="does not match"):
        P.probe(wrong_decoder, image, P.ProbeOptions())
    wrong_grid = P.ProbeVAE(callables["encode_moments"], callables["decode"], downscale=4)
    with pytest.raises(LatentLabInputError, match="one cell per 4x4 px"):
        P.probe(wrong_grid, image, P.ProbeOptions())
    video = P.ProbeVAE(lambda p: (torch.zeros(1, 4, 2, 12, 12), None), callables["decode"])
    with pytest.raises(LatentLabInputError, match="video and audio VAEs are not supported"):
        P.probe(video, image, P.ProbeOptions())


@pytest.mark.parametrize("options,message", [
    (P.ProbeOptions(mode="map", map_passes=2), "map_passes to at least 3"),
    (P.ProbeOptions(verify_decodes=2), "at least 3"),
    (P.ProbeOptions(image_index=3), "out of range"),
    (P.ProbeOptions(mode="sideways"), "Unknown mode"),
    (P.ProbeOptions(scan_sizes=(16,)), "too small"),
])
def test_bad_options_get_clear_errors(options, message, flawed):
    with pytest.raises(LatentLabInputError, match=message):
        P.probe(probe_vae(flawed), D.random_images(1, 96, seed=1), options)


def test_brute_force_refuses_large_latents(flawed):
    with pytest.raises(LatentLabInputError, match="Use map mode"):
        P.probe(probe_vae(flawed), D.random_images(1, (512, 264), seed=1), P.ProbeOptions(mode="brute"))


@pytest.mark.parametrize("text,expected", [("", ()), ("256", (256,)), ("256, 384 512", (256, 384, 512))])
def test_parse_scan_sizes(text, expected):
    assert P.parse_scan_sizes(text) == expected


@pytest.mark.parametrize("text", ["256,abc", "-5", "1.5", "0", "²"])
def test_parse_scan_sizes_refuses_junk(text):
    with pytest.raises(LatentLabInputError, match="not a positive whole number"):
        P.parse_scan_sizes(text)


# ---------------------------------------------------------------- every input checked before any work

class Watched:
    """A ProbeVAE over the synthetic model that records every encode, decode and memory request."""

    def __init__(self, model, budget=float("inf"), channels=None):
        self.calls = []
        callables = D.plain_callables(model)

        def encode_moments(pixels):
            self.calls.append(("encode", tuple(pixels.shape)))
            return callables["encode_moments"](pixels)

        def decode(latent):
            self.calls.append(("decode", tuple(latent.shape)))
            return callables["decode"](latent)

        def room(needed):
            self.calls.append(("room", needed))
            return budget
        self.vae = P.ProbeVAE(encode_moments, decode, max_batch=64, bytes_needed=lambda h, w, mode: 8.0 * h * w,
                              room=room, channels=channels)

    def work(self) -> list:
        return [call for call in self.calls if call[0] != "room"]


@pytest.mark.parametrize("options,message", [
    (P.ProbeOptions(verify_decodes=2), "at least 3"),
    (P.ProbeOptions(mode="map", map_passes=2), "map_passes to at least 3"),
    (P.ProbeOptions(scan_sizes=(16,)), "too small"),
    (P.ProbeOptions(scan_sizes=(100_000,)), "larger than 4096 px"),
    (P.ProbeOptions(threshold=float("nan")), "not a positive number"),
    (P.ProbeOptions(radius=0), "out of range"),
    (P.ProbeOptions(seed=-1), "out of range"),
    (P.ProbeOptions(seed=2 ** 70), "out of range"),
    (P.ProbeOptions(verify_decodes=10 ** 9), "not a whole number up to"),
    (P.ProbeOptions(mode="map", map_passes=float("inf")), "not a number up to"),
    (P.ProbeOptions(image_index=-1), "out of range"),
    (P.ProbeOptions(mode="brute"), "Use map mode"),
])
def test_bad_options_are_refused_before_any_encode_or_decode(options, message, flawed):
    watched = Watched(flawed, channels=4)
    with pytest.raises(LatentLabInputError, match=message):
        P.probe(watched.vae, D.random_images(1, (512, 264), seed=1), options)
    assert watched.work() == []


def test_a_huge_scan_size_is_refused_before_anything_is_allocated(flawed):
    with pytest.raises(LatentLabInputError, match="larger than 4096 px") as refused:
        P.parse_scan_sizes("256, 100000")
    assert "Use sizes up to 4096 px" in str(refused.value)
    with pytest.raises(LatentLabInputError, match="larger than 4096 px") as refused:
        P.parse_scan_sizes("9" * 100_000)
    assert len(str(refused.value)) < 300  # a short excerpt of the value, not the value
    with pytest.raises(LatentLabInputError, match="at most 12"):
        P.parse_scan_sizes(" ".join(["64"] * 13))
    watched = Watched(flawed)
    with pytest.raises(LatentLabInputError, match="larger than 4096 px"):
        P.probe(watched.vae, D.random_images(1, 96, seed=1), P.ProbeOptions(scan_sizes=(64, 100_000)))
    assert watched.calls == []


def test_memory_for_the_probe_and_every_scan_size_is_checked_once_up_front(flawed):
    image = D.random_images(1, 96, seed=1)
    watched = Watched(flawed)
    P.probe(watched.vae, image, P.ProbeOptions(scan_sizes=(64, 128, 160)))
    rooms = [call for call in watched.calls if call[0] == "room"]
    assert rooms == [("room", 8.0 * 160 * 160)]  # one load of the VAE, for the largest pass
    assert watched.calls[0][0] == "room"
    tight = Watched(flawed, budget=8.0 * 130 * 130)
    with pytest.raises(LatentLabInputError, match="resolution-scan encode") as refused:
        P.probe(tight.vae, image, P.ProbeOptions(scan_sizes=(64, 160)))
    assert "Drop sweep_sizes above about" in str(refused.value)
    assert tight.work() == []


def test_an_empty_image_batch_says_what_to_connect(flawed):
    watched = Watched(flawed)
    with pytest.raises(LatentLabInputError, match="The IMAGE batch is empty") as refused:
        P.probe(watched.vae, torch.zeros(0, 96, 96, 3), P.ProbeOptions())
    assert "Connect an IMAGE that holds at least one image" in str(refused.value)
    assert watched.calls == []


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(P.MODES + ("", "Verify")),
       threshold=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 200)),
       radius=st.integers(-2, 80), verify_decodes=st.integers(-5, 2000), map_passes=st.integers(-5, 200_000),
       seed=st.integers(-5, 2 ** 64), scan=st.lists(st.integers(-10, 10_000), max_size=14),
       image_index=st.integers(-3, 3))
def test_any_options_give_a_plan_or_a_clear_refusal_without_work(mode, threshold, radius, verify_decodes, map_passes,
                                                                 seed, scan, image_index):
    watched = Watched(FUZZ_VAE, channels=4)
    options = P.ProbeOptions(mode=mode, threshold=threshold, radius=radius, verify_decodes=verify_decodes,
                             map_passes=map_passes, seed=seed, scan_sizes=tuple(scan), image_index=image_index)
    try:
        plan = P.plan_probe(watched.vae, FUZZ_IMAGE, options)
    except LatentLabInputError:
        assert watched.work() == []
        return
    assert plan.pixels.shape[2:] == (96, 96) and len(plan.scan) == len(scan)
    assert all(max(shape) <= P.MAX_SCAN_SIDE for shape in plan.scan)
    assert P.progress_units(plan, 4) >= len(scan)


FUZZ_VAE = D.AutoencoderKL(flawed=True, seed=1)
FUZZ_IMAGE = D.random_images(2, 96, seed=1)
