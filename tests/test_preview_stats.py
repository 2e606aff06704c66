import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from latent_lab.core import preview, stats
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import SD15, SDXL


def random_latent(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 5


def test_every_batch_item_gets_a_preview_matching_a_bare_reference():
    raw = random_latent(3, 4, 6, 7)
    affine = SDXL.rgb_affine()
    images = preview.preview_images(raw, affine, factor=8)
    assert images.shape == (3, 48, 56, 3)
    scaled = SDXL.to_scaled(raw)
    reference = (F.linear(scaled.movedim(1, -1), torch.tensor(SDXL.factor_set().weights).T,
                          torch.tensor(SDXL.factor_set().bias)) + 1) / 2
    reference = reference.clamp(0, 1).repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert torch.allclose(images, reference, atol=1e-5)


def test_bilinear_stays_in_range_and_latent_size_is_one_pixel_per_cell():
    raw = random_latent(2, 4, 5, 5)
    assert preview.preview_images(raw, SD15.rgb_affine(), 1).shape == (2, 5, 5, 3)
    smooth = preview.preview_images(raw, SD15.rgb_affine(), 8, "bilinear")
    assert smooth.min() >= 0 and smooth.max() <= 1


def test_sixteen_channels_with_sd15_factors_is_refused():
    with pytest.raises(LatentLabInputError, match="16 channels.*expect 4"):
        preview.preview_images(random_latent(1, 16, 4, 4), SD15.rgb_affine())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4))
def test_mean_color_is_the_mean_of_the_unclamped_preview(seed, batch):
    raw = random_latent(batch, 4, 4, 6, seed=seed) * 0.1
    affine = SDXL.rgb_affine()
    direct = preview.linear_rgb(raw, affine, clamp=False).mean(dim=(2, 3))
    assert torch.allclose(preview.mean_color(raw, affine), direct, atol=1e-5)


def test_preview_does_not_touch_its_input():
    raw = random_latent(2, 4, 4, 4)
    before = raw.clone()
    preview.preview_images(raw, SDXL.rgb_affine(), 8, "bilinear")
    assert torch.equal(raw, before)


def test_channel_stats_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    table = stats.channel_stats(values, sigma_k=1.5)
    assert table["mean"] == pytest.approx([22.0, 0.0])
    assert table["std"][0] == pytest.approx(float(np.std([1, 2, 3, 4, 100])))
    assert table["min"] == [1.0, 0.0] and table["max"] == [100.0, 0.0]
    assert table["percentiles"]["p50"] == pytest.approx([3.0, 0.0])
    assert table["beyond_k_sigma"] == pytest.approx([0.2, 0.0])


def test_per_item_stats_keep_items_apart():
    latent = torch.stack([torch.zeros(2, 3, 3), torch.ones(2, 3, 3) * 5])
    items = stats.per_item_stats(latent)
    assert items[0]["mean"] == [0.0, 0.0] and items[1]["mean"] == [5.0, 5.0]
    assert stats.batch_stats(latent)["mean"] == pytest.approx([2.5, 2.5])
