"""VAE anomaly probe (core): flags, far-field influence in every mode, sweep, verdict, bad inputs."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from scipy.stats import spearmanr

import probe_doubles as D
from latent_lab.core import probe as P
from latent_lab.core.errors import LatentLabInputError

SIZES = [(64, 64), (96, 128), (128, 96), (80, 112), (128, 128)]


@pytest.fixture(scope="module")
def flawed():
    return D.AutoencoderKL(flawed=True, seed=1)


@pytest.fixture(scope="module")
def healthy():
    return D.AutoencoderKL(flawed=False, seed=1)


def probe_vae(model, precise=False, **extra):
    return P.ProbeVAE(**D.plain_callables(model, precise=precise), max_batch=64, **extra)


def planted(model, image) -> tuple:
    return model.planted_cell(image.movedim(-1, 1))


def images_over_sizes(count: int, seed: int):
    for i in range(count):
        size = SIZES[i % len(SIZES)]
        yield D.random_images(1, size, seed=seed + i)


def test_planted_cell_is_top_in_flags_and_both_influence_modes_over_20_images(flawed):
    vae = probe_vae(flawed)
    for i, image in enumerate(images_over_sizes(20, seed=100)):
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


def test_healthy_vae_flags_nothing_on_20_images(healthy):
    vae = probe_vae(healthy)
    for i, image in enumerate(images_over_sizes(20, seed=300)):
        stats = P.cell_stats(*vae.encode_moments(image.movedim(-1, 1)))
        flags = P.find_flags(stats, 6.0, 8)
        assert flags["count"] == 0, (i, flags["cells"][:2])


@pytest.mark.parametrize("size,kind", [((64, 64), "healthy"), ((96, 128), "healthy"), ((128, 128), "healthy"),
                                       ((64, 64), "flawed"), ((96, 96), "flawed"), ((128, 128), "flawed"),
                                       ((96, 96), "patterned"), ((128, 128), "patterned")])
def test_map_estimator_agrees_with_brute_force(size, kind, flawed, healthy):
    """Same top-1 and Spearman >= 0.9 against the exact map, at the default 24-pass budget.

    A healthy VAE has no distinguished top cell (its largest values tie within a few percent), so there the
    estimator's top cell must be within 3% of the exact maximum instead. "patterned": the global term reaches
    pixels through a spatial pattern, so the estimator is not exact by construction as it is for a uniform one.
    """
    model = {"flawed": flawed, "healthy": healthy}.get(kind) or D.AutoencoderKL(flawed=True, seed=1, patterned=True)
    callables = D.plain_callables(model)
    image = D.random_images(1, size, seed=7 + size[1])
    mean, _ = callables["encode_moments"](image.movedim(-1, 1))
    exact = P.far_field_brute(callables["decode"], mean, 3, max_batch=128)
    estimate, info = P.far_field_map(callables["decode"], mean, 3, budget=24, seed=1)
    top = int(estimate.argmax())
    if kind != "healthy":
        assert top == int(exact.argmax())
    else:
        assert float(exact.flatten()[top]) >= 0.97 * float(exact.max())
    rho = spearmanr(exact.flatten().numpy(), estimate.flatten().numpy())[0]
    assert rho >= 0.9, rho
    assert info["backward_passes"] == 11 and info["bands_per_cell"]["min"] >= 1


def test_verify_measures_a_cell_like_brute_force(flawed):
    callables = D.plain_callables(flawed)
    image = D.random_images(1, 96, seed=11)
    mean, _ = callables["encode_moments"](image.movedim(-1, 1))
    exact = P.far_field_brute(callables["decode"], mean, 3, max_batch=128)
    truth = planted(flawed, image)
    excluded = torch.zeros(12, 12, dtype=torch.bool)
    excluded[truth] = True
    result = P.far_field_verify(callables["decode"], mean, [truth], excluded, 3, decodes=8)
    cell = result["cells"][0]
    assert cell["directions"] == 4
    assert cell["influence"] == pytest.approx(float(exact[truth]), rel=0.1)
    typical = float(exact.flatten().median())
    samples = sorted(s["influence"] for s in result["samples"])
    assert typical / 3 < samples[len(samples) // 2] < typical * 3


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
    assert report["influence"]["decoder_equivalent_passes"] == 1 + 6 * P.BACKWARD_PASSES <= 13
    decoded.clear()
    report = P.probe(vae, D.random_images(1, 32, seed=2), P.ProbeOptions(mode="brute", radius=1)).report
    assert sum(decoded) == report["influence"]["decoder_equivalent_passes"] == 2 * 4 * 16


def test_report_keys_verdict_and_determinism(flawed):
    vae = probe_vae(flawed)
    image = D.random_images(2, (100, 140), seed=5)
    options = P.ProbeOptions(mode="map", seed=3, sweep_sizes=(96, 160), image_index=1)
    first = P.probe(vae, image, options).report
    second = P.probe(vae, image, options).report
    assert set(first) == set(P.REPORT_KEYS)
    assert first["image"] == {"input_size": [100, 140], "probed_size": [96, 136], "crop_offset": [2, 2], "image_index": 1}
    assert first["latent"] == {"shape": [4, 12, 17], "downscale": 8}
    cell = first["flags"]["cells"][0]
    assert cell["pixel_box"] == [2 + 8 * cell["y"], 2 + 8 * cell["x"], 10 + 8 * cell["y"], 10 + 8 * cell["x"]]
    assert first["verdict"].startswith(f"1 anomalous cell at ({cell['y']}, {cell['x']}): logvar -40.0")
    assert "x median" in first["verdict"]
    assert any("item 1" in note for note in first["notes"])
    for key in ("flags", "sweep", "verdict"):
        assert first[key] == second[key]
    assert [row["latent"] for row in first["sweep"]] == [[8, 12], [14, 20]]  # longer side 96 and 160 px


def test_logvar_is_reported_before_the_clamp(flawed):
    report = P.probe(probe_vae(flawed), D.random_images(1, 96, seed=4), P.ProbeOptions()).report
    assert report["moments"]["logvar_channel_mean"]["min"] == pytest.approx(D.PLANTED_LOGVAR)
    assert report["moments"]["logvar_read"].startswith("before")


def test_resolution_sweep_finds_the_cell_at_every_size(flawed):
    image = D.random_images(1, 160, seed=21)
    options = P.ProbeOptions(sweep_sizes=(64, 96, 128, 160))
    rows = P.probe(probe_vae(flawed), image, options).report["sweep"]
    assert [row["size"] for row in rows] == [[64, 64], [96, 96], [128, 128], [160, 160]]
    for row in rows:
        pixels = P.resized(image, row["size"][0], 8)
        assert row["flag_count"] == 1
        assert (row["cells"][0]["y"], row["cells"][0]["x"]) == flawed.planted_cell(pixels)
        assert row["min_logvar"] == pytest.approx(D.PLANTED_LOGVAR)


def test_vae_without_logvar_gets_a_note_and_magnitude_flags(flawed):
    callables = D.plain_callables(flawed, with_logvar=False)
    image = D.random_images(1, 96, seed=8)
    result = P.probe(P.ProbeVAE(**callables), image, P.ProbeOptions(mode="verify"))
    assert result.logvar is None and "logvar" not in result.stats
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
    P.far_field_verify(probe_vae(flawed).decode, result.mean, [(0, 0)], torch.zeros(12, 12, dtype=torch.bool), 3)
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
    (P.ProbeOptions(sweep_sizes=(16,)), "too small"),
])
def test_bad_options_get_clear_errors(options, message, flawed):
    with pytest.raises(LatentLabInputError, match=message):
        P.probe(probe_vae(flawed), D.random_images(1, 96, seed=1), options)


def test_brute_force_refuses_large_latents(flawed):
    with pytest.raises(LatentLabInputError, match="Use map mode"):
        P.probe(probe_vae(flawed), D.random_images(1, (512, 264), seed=1), P.ProbeOptions(mode="brute"))


@pytest.mark.parametrize("text,expected", [("", ()), ("256", (256,)), ("256, 384 512", (256, 384, 512))])
def test_parse_sizes(text, expected):
    assert P.parse_sizes(text) == expected


@pytest.mark.parametrize("text", ["256,abc", "-5", "1.5"])
def test_parse_sizes_refuses_junk(text):
    with pytest.raises(LatentLabInputError, match="not a positive whole number"):
        P.parse_sizes(text)


# ---------------------------------------------------------------- properties

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 50), st.floats(-100, 100))
def test_robust_z_ignores_affine_changes(seed, scale, shift):
    values = torch.randn(10, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
    z, _, _ = P.robust_z(values)
    moved, median, spread = P.robust_z(values * scale + shift)
    assert torch.allclose(z, moved, atol=1e-3)
    assert median == pytest.approx(float(values.flatten().median()) * scale + shift, rel=1e-4, abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(2, 20), st.floats(0, 20))
def test_higher_threshold_never_flags_more(seed, low, extra):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(1, 4, 9, 11, generator=generator) * torch.rand(1, 1, 9, 11, generator=generator) * 3
    logvar = torch.randn(1, 4, 9, 11, generator=generator) - 6
    stats = P.cell_stats(mean, logvar)
    assert P.flag_mask(stats, low + extra).sum() <= P.flag_mask(stats, low).sum()


@settings(max_examples=20, deadline=None)
@given(st.integers(8, 20), st.integers(8, 20), st.integers(1, 3), st.integers(1, 20), st.integers(0, 999))
def test_band_plan_gives_every_cell_a_far_band(height, width, radius, count, seed):
    plan = P.band_plan(max(count, 4), radius, height, width, torch.Generator().manual_seed(seed))
    covered = torch.stack([m for *_, m in plan]).sum(0)
    assert int(covered.min()) >= 1
    for orientation, start, length, _, usable in plan:
        for y, x in usable.nonzero().tolist():
            far = P.far_cells(y, x, radius, height, width)
            band = torch.zeros(height, width, dtype=torch.bool)
            if orientation == "rows":
                band[start:start + length] = True
            else:
                band[:, start:start + length] = True
            assert bool(far[band].all())


def test_far_sum_matches_masked_sum():
    field = torch.rand(40, 48, dtype=torch.float64)
    box = P.window_box(2, 3, 2, 5, 6)
    far = P.to_pixels(P.far_cells(2, 3, 2, 5, 6), 8)
    assert float(P._far_sum(field, box, 8)) == pytest.approx(float(field[far].sum()))


def test_influence_definition_on_a_linear_decoder():
    """A linear decoder with a known Jacobian: every mode returns the formula's value."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(4, 3, generator=generator)
    spread = torch.rand(6, 7, generator=generator) + 0.5  # each cell adds weights * spread[cell] to every pixel

    def decode(latent):
        shift = torch.einsum("bchw,hw,ck->bk", latent.double(), spread.double(), weights.double())
        return shift[:, :, None, None].expand(latent.shape[0], 3, 48, 56).clone()
    latent = torch.randn(1, 4, 6, 7, generator=generator)
    exact = spread * weights.pow(2).sum().div(4 * 3).sqrt()  # RMS over far pixels and channel directions
    assert torch.allclose(P.far_field_brute(decode, latent, 1, max_batch=64), exact.float(), rtol=1e-4)
    estimate, _ = P.far_field_map(decode, latent, 1, budget=24)
    level = float(estimate.median() / exact.median())
    assert 0.6 < level < 1.6  # the absolute level is a random estimate; ratios between cells are exact here
    assert torch.allclose(estimate / level, exact.float(), rtol=1e-3)
    excluded = torch.zeros(6, 7, dtype=torch.bool)
    result = P.far_field_verify(decode, latent, [(2, 3)], excluded, 1, decodes=8)
    assert result["cells"][0]["influence"] == pytest.approx(float(exact[2, 3]), rel=1e-3)
    assert math.isfinite(result["samples"][0]["influence"])
