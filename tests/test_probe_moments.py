"""Probe moments and flags (core/probe_moments.py): robust z-scores, severity, flagged cells."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import probe_doubles as D
from probe_doubles import healthy  # noqa: F401  (fixtures)
from latent_lab.core import probe_moments as M

def test_healthy_vae_flags_nothing_on_20_images(healthy):
    callables = D.plain_callables(healthy)
    for i, image in enumerate(D.images_over_sizes(20, seed=300)):
        stats = M.cell_stats(*callables["encode_moments"](image.movedim(-1, 1)))
        flags = M.find_flags(stats, 6.0)
        assert len(flags.ranked) == 0, (i, flags.ranked[:2])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 50), st.floats(-100, 100))
def test_robust_z_ignores_affine_changes(seed, scale, shift):
    values = torch.randn(10, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
    z, _, _ = M.robust_z(values)
    moved, median, spread = M.robust_z(values * scale + shift)
    assert torch.allclose(z, moved, atol=1e-3)
    assert median == pytest.approx(float(values.flatten().median()) * scale + shift, rel=1e-4, abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(2, 20), st.floats(0, 20))
def test_higher_threshold_never_flags_more(seed, low, extra):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(1, 4, 9, 11, generator=generator) * torch.rand(1, 1, 9, 11, generator=generator) * 3
    logvar = torch.randn(1, 4, 9, 11, generator=generator) - 6
    stats = M.cell_stats(mean, logvar)
    assert M.find_flags(stats, low + extra).mask.sum() <= M.find_flags(stats, low).mask.sum()


def test_flagged_cells_are_ranked_by_severity_computed_once():
    callables = D.plain_callables(D.AutoencoderKL(flawed=True, seed=1))
    mean, logvar = callables["encode_moments"](D.random_images(1, 96, seed=5).movedim(-1, 1))
    mean = mean.clone()
    mean[0, :, 2, 3] *= 4  # a second, milder outlier
    stats = M.cell_stats(mean, logvar)
    expected = torch.maximum(stats.magnitude.z, -stats.logvar.z)
    assert torch.equal(stats.severity, expected)
    flags = M.find_flags(stats, 6.0)
    scores = [float(stats.severity[y, x]) for y, x in flags.ranked]
    assert len(flags.ranked) >= 2 and scores == sorted(scores, reverse=True)
    assert int(flags.mask.sum()) == len(flags.ranked)
    report = M.flags_report(stats, flags, 8)
    assert [(c["y"], c["x"]) for c in report["cells"]] == flags.ranked[:M.MAX_LISTED_CELLS]
    assert M.measured_cells(stats, flags) == flags.ranked


def test_with_nothing_flagged_the_most_extreme_cell_is_measured(healthy):
    callables = D.plain_callables(healthy)
    stats = M.cell_stats(*callables["encode_moments"](D.random_images(1, 96, seed=9).movedim(-1, 1)))
    flags = M.find_flags(stats, 6.0)
    assert flags.ranked == [] and M.flags_report(stats, flags, 8)["count"] == 0
    (cell,) = M.measured_cells(stats, flags)
    assert float(stats.severity[cell]) == float(stats.severity.max())
