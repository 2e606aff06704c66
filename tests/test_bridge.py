"""Core bridge math: affine and conv fits on synthetic VAE pairs with a known relation, the approximate bridge,
the calibration set and augmentation."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from bridge_doubles import affine_pair, conv_pair
from latent_lab.core import bridge as bridges
from latent_lab.core import calibration
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import FORMATS, SD15, SDXL
from latent_lab.core.preview import linear_rgb, mean_color


def encoded_pairs(a, b, images):
    return [(a.encode(images), b.encode(images))]


@pytest.fixture(scope="module")
def calibration_views():
    return calibration.augment(calibration.calibration_images(12, 64, seed=0), 4, seed=0)


# ---- affine ------------------------------------------------------------------------------------------------------

def test_affine_fit_recovers_the_encoders_relation(calibration_views):
    a, b, matrix, bias = affine_pair(seed=3)
    fitted = bridges.fit_affine(encoded_pairs(a, b, calibration_views))
    assert torch.allclose(fitted.weight, matrix, atol=1e-4)
    assert torch.allclose(fitted.bias, bias, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), in_channels=st.sampled_from([4, 16]), out_channels=st.sampled_from([4, 16]))
def test_affine_fit_is_exact_for_any_affine_relation(seed, in_channels, out_channels):
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(3, in_channels, 9, 7, generator=generator) * 4 + 1
    weight = torch.randn(in_channels, out_channels, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    target = torch.einsum("bchw,ck->bkhw", source, weight) + bias.view(1, -1, 1, 1)
    fitted = bridges.fit_affine([(source, target)])
    assert torch.allclose(fitted(source), target, atol=1e-3 * target.abs().max().item())


def test_affine_fit_refuses_too_little_data():
    with pytest.raises(LatentLabInputError, match="Too few latent cells"):
        bridges.fit_affine([(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2))])


def test_pairs_that_do_not_line_up_are_refused():
    with pytest.raises(LatentLabInputError, match="do not line up"):
        bridges.fit_affine([(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 6))])


# ---- conv ----------------------------------------------------------------------------------------------------------

CONV_STATED_ERROR = 0.02  # held-out latent MSE as a share of the target's variance, for a 3x3-conv relation


def test_conv_fit_learns_a_spatial_relation_the_affine_map_cannot():
    a, b, _ = conv_pair(seed=0)
    views = calibration.augment(calibration.calibration_images(12, 128, seed=0), 2, seed=0)  # 15x15-cell latents
    held_out = calibration.crop_to_cells(calibration.calibration_images(16, 128, seed=1)[12:])
    train, held = encoded_pairs(a, b, views), encoded_pairs(a, b, held_out)
    affine = bridges.fit_affine(train)
    conv = bridges.train_conv(train, affine, steps=600, learning_rate=1e-2, seed=0, width=32, blocks=1, crop=16)
    affine_error = bridges.latent_errors(affine, held)["held_out_latent_relative_mse"]
    conv_error = bridges.latent_errors(conv, held)["held_out_latent_relative_mse"]
    assert affine_error > 0.1  # the relation really is spatial
    assert conv_error < CONV_STATED_ERROR
    assert conv_error < 0.2 * affine_error


def test_conv_starts_as_the_affine_map_and_training_is_deterministic(calibration_views):
    a, b, _ = conv_pair(seed=1)
    train = encoded_pairs(a, b, calibration_views[:8])
    affine = bridges.fit_affine(train)
    untrained = bridges.ConvBridge(4, 4, 8, 1)
    untrained.affine.load_state_dict(affine.state_dict())
    z = train[0][0][:2]
    assert torch.allclose(untrained(z), affine(z))
    losses = []
    first = bridges.train_conv(train, affine, 5, seed=7, width=8, blocks=1, callback=lambda s, l: losses.append((s, l)))
    second = bridges.train_conv(train, affine, 5, seed=7, width=8, blocks=1)
    other = bridges.train_conv(train, affine, 5, seed=8, width=8, blocks=1)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5]
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not torch.equal(first.head.weight, other.head.weight)


def test_training_stops_when_the_callback_raises(calibration_views):
    a, b, _ = conv_pair(seed=1)
    train = encoded_pairs(a, b, calibration_views[:4])

    def stop(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bridges.train_conv(train, bridges.fit_affine(train), 100, width=8, blocks=1, callback=stop)


def test_parameter_limit():
    default = bridges.build({"type": "conv", "in_channels": 4, "out_channels": 4, "width": 64, "blocks": 6})
    assert bridges.parameter_count(default) <= bridges.MAX_PARAMETERS
    with pytest.raises(LatentLabInputError, match="limit is 1,500,000"):
        bridges.build({"type": "conv", "in_channels": 4, "out_channels": 4, "width": 128, "blocks": 6})


@pytest.mark.parametrize("architecture, message", [
    ({"type": "mlp", "in_channels": 4, "out_channels": 4}, "Unknown bridge type"),
    ({"type": "affine", "in_channels": 0, "out_channels": 4}, "in_channels"),
    ({"type": "conv", "in_channels": 4, "out_channels": 4, "width": "64", "blocks": 6}, "width"),
])
def test_bad_architectures_are_refused(architecture, message):
    with pytest.raises(LatentLabInputError, match=message):
        bridges.build(architecture)


# ---- approximate -------------------------------------------------------------------------------------------------

def flat_latent(fmt, color: torch.Tensor, invisible: float, size=(5, 6)) -> torch.Tensor:
    """A raw latent whose linear preview is `color` (0..1) everywhere, plus some of the direction it cannot see."""
    affine = fmt.rgb_affine()
    weight, bias = affine.weight.double(), affine.bias.double()
    cell = (color.double() - bias) @ torch.linalg.pinv(weight)
    null = torch.linalg.svd(weight, full_matrices=True)[0][:, 3]
    cell = cell + invisible * null
    return cell.float().view(1, -1, 1, 1).expand(1, fmt.channels, *size).clone()


@settings(max_examples=40, deadline=None)
@given(color=st.tuples(*[st.floats(0.05, 0.95)] * 3), invisible=st.floats(-20, 20),
       direction=st.sampled_from([("sd15", "sdxl"), ("sdxl", "sd15")]))
def test_approximate_keeps_a_flat_preview_color(color, invisible, direction):
    source, target = FORMATS[direction[0]], FORMATS[direction[1]]
    color = torch.tensor(color)
    latent = flat_latent(source, color, invisible)
    assert torch.allclose(linear_rgb(latent, source.rgb_affine())[0, :, 0, 0], color, atol=1e-4)  # the premise
    bridged = bridges.approximate(latent, source, target)
    preview = linear_rgb(bridged, target.rgb_affine())
    assert torch.allclose(preview, color.view(1, 3, 1, 1).expand_as(preview), atol=2e-3)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), direction=st.sampled_from([("sd15", "sdxl"), ("sdxl", "sd15")]))
def test_approximate_keeps_each_items_mean_preview_color(seed, direction):
    source, target = FORMATS[direction[0]], FORMATS[direction[1]]
    generator = torch.Generator().manual_seed(seed)
    latent = source.to_raw(torch.randn(3, 4, 8, 8, generator=generator) + torch.randn(3, 4, 1, 1, generator=generator))
    bridged = bridges.approximate(latent, source, target)
    assert torch.allclose(mean_color(bridged, target.rgb_affine()), mean_color(latent, source.rgb_affine()), atol=2e-3)


@pytest.mark.parametrize("source, target", [(SD15, SDXL), (SDXL, SD15)])
def test_approximate_keeps_detail_spread_near_the_targets_unit_spread(source, target):
    """Statistics matching: unit-spread scaled input gives target channels of about unit spread, where the exact
    color inverse would inflate SDXL's weakly-previewed 3rd channel about fourfold."""
    generator = torch.Generator().manual_seed(0)
    scaled = torch.randn(4, 4, 32, 32, generator=generator)
    bridged = target.to_scaled(bridges.approximate(source.to_raw(scaled), source, target))
    spread = bridged.std(dim=(0, 2, 3))
    assert spread.max() < 2.0 and spread.min() > 0.3
    exact = bridges.approximate_maps(source, target, preview_error=0.0)["detail"]
    exact_spread = (scaled.permute(0, 2, 3, 1).reshape(-1, 4).double() @ exact).std(dim=0)
    if target is SDXL:
        assert exact_spread.max() > 3.0  # what the regularization prevents


def test_approximate_same_format_is_identity_and_inputs_stay_unchanged():
    latent = torch.randn(2, 4, 6, 6)
    before = latent.clone()
    assert torch.equal(bridges.approximate(latent, SD15, SD15), latent)
    bridges.approximate(latent, SD15, SDXL)
    assert torch.equal(latent, before)


def test_approximate_refuses_a_channel_mismatch():
    with pytest.raises(LatentLabInputError, match="16 channels"):
        bridges.approximate(torch.randn(1, 16, 4, 4), SD15, SDXL)


# ---- calibration set and augmentation ------------------------------------------------------------------------

def test_calibration_set_is_seeded_varied_and_in_range():
    images = calibration.calibration_images(8, 64, seed=5)
    assert images.shape == (8, 64, 64, 3)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, calibration.calibration_images(8, 64, seed=5))
    assert not torch.equal(images, calibration.calibration_images(8, 64, seed=6))
    spread = images.flatten(1, 2).std(dim=1).mean(dim=1)  # per image
    kinds = torch.arange(8) % len(calibration.KINDS)
    assert (spread[kinds == 0] == 0).all()  # flat color fields
    assert (spread[kinds != 0] > 0.01).all()  # gradients, shapes, textures


def test_augment_views_flips_and_sub_cell_crops():
    images = calibration.calibration_images(2, 40, seed=0)
    before = images.clone()
    views = calibration.augment(images, 4, seed=0)
    assert views.shape == (8, 32, 32, 3)
    assert torch.equal(views[0], images[0, :32, :32])
    assert any(torch.equal(views[1], images[0].flip(1)[top:top + 32, left:left + 32])
               for top in range(9) for left in range(9))
    assert any(torch.equal(views[2], images[0].flip(0)[top:top + 32, left:left + 32])
               for top in range(9) for left in range(9))
    assert torch.equal(images, before)
    assert calibration.augment(images, 1).shape == (2, 40, 40, 3)


def test_augment_refuses_tiny_images():
    with pytest.raises(LatentLabInputError, match="too small"):
        calibration.augment(torch.rand(1, 12, 12, 3), 2)
