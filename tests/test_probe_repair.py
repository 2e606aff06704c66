"""Latent spot repair (core): interpolation properties, mask and report inputs, influence before and after."""
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

import probe_doubles as D
from latent_lab.core import probe as P
from latent_lab.core import spot_repair as R
from latent_lab.core.errors import LatentLabInputError


@pytest.fixture(scope="module")
def flawed():
    return D.AutoencoderKL(flawed=True, seed=1)


def planted_case(model, size=96, seed=0):
    callables = D.plain_callables(model)
    image = D.random_images(1, size, seed=seed)
    mean, _ = callables["encode_moments"](image.movedim(-1, 1))
    cells = torch.zeros(1, *mean.shape[2:], dtype=torch.bool)
    cells[(0, *model.planted_cell(image.movedim(-1, 1)))] = True
    return callables, mean, cells


@pytest.mark.parametrize("method", R.METHODS)
def test_repair_lowers_the_planted_cells_far_field_influence(method, flawed):
    for seed in range(4):
        callables, mean, cells = planted_case(flawed, seed=seed)
        y, x = cells[0].nonzero()[0].tolist()
        repaired = R.repair(mean, cells, method)
        # verify with all 4 channel directions measures the cell exactly, against sampled ordinary cells
        before = P.far_field_verify(callables["decode"], mean, [(y, x)], cells[0], 3, decodes=8)
        after = P.far_field_verify(callables["decode"], repaired, [(y, x)], cells[0], 3, decodes=8)
        (cell_before,), (cell_after,) = before["cells"], after["cells"]
        assert cell_before["directions"] == cell_after["directions"] == 4
        assert cell_before["influence"] > 50 * typical(before)
        assert cell_after["influence"] < 0.2 * cell_before["influence"]
        assert cell_after["influence"] < 5 * typical(after), seed  # an ordinary cell again in the repaired latent
        changed = (repaired != mean).any(1)[0]
        assert changed.nonzero().tolist() == [[y, x]]


def typical(result: dict) -> float:
    values = sorted(s["influence"] for s in result["samples"])
    return values[len(values) // 2]


def test_verify_agrees_with_brute_force_after_repair(flawed):
    callables, mean, cells = planted_case(flawed, seed=1)
    y, x = cells[0].nonzero()[0].tolist()
    repaired = R.repair(mean, cells, "harmonic")
    exact = P.far_field_brute(callables["decode"], repaired, 3, max_batch=128)
    measured = P.far_field_verify(callables["decode"], repaired, [(y, x)], cells[0], 3, decodes=8)
    assert measured["cells"][0]["influence"] == pytest.approx(float(exact[y, x]), rel=0.1)


def test_reprobe_reports_before_and_after(flawed):
    callables, mean, cells = planted_case(flawed, seed=3)
    repaired = R.repair(mean, cells, "harmonic")
    result = R.reprobe(callables["decode"], mean, repaired, cells, 3, decodes=8)
    row = result["cells"][0]
    assert row["before_ratio"] > 50 and row["after_ratio"] < 5
    assert result["decoder_equivalent_passes"] == 16
    assert "->" in R.reprobe_text(result)
    json.dumps(result)


def test_repair_does_not_mutate_and_keeps_other_cells():
    samples = torch.randn(2, 4, 10, 12)
    copy = samples.clone()
    cells = torch.zeros(2, 10, 12, dtype=torch.bool)
    cells[0, 3, 4] = cells[1, 0, 0] = cells[1, 9, 11] = True
    out = R.repair(samples, cells, "harmonic")
    assert torch.equal(samples, copy)
    assert torch.equal(out[~cells[:, None].expand_as(out)], samples[~cells[:, None].expand_as(samples)])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 14), st.integers(5, 14), st.floats(-3, 3), st.floats(-3, 3))
def test_harmonic_fill_reproduces_linear_fields_inside(seed, height, width, slope_y, slope_x):
    """A linear field is discrete-harmonic, so masked interior cells come back exactly."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(height).double(), torch.arange(width).double(), indexing="ij")
    field = torch.stack([slope_y * y + slope_x * x + c for c in range(4)])
    mask = torch.rand(height, width, generator=generator) < 0.3
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = False, False, False, False
    if not mask.any():
        mask[height // 2, width // 2] = True
    filled = R.harmonic_fill(field, mask)
    assert torch.allclose(filled, field, atol=1e-8)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(R.METHODS))
def test_fill_stays_within_the_unmasked_range(seed, method):
    """Maximum principle: a filled value never leaves the range of the known cells (per channel)."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.randn(3, 9, 11, generator=generator, dtype=torch.float64)
    mask = torch.rand(9, 11, generator=generator) < 0.4
    if mask.all():
        mask[0, 0] = False
    if not mask.any():
        mask[4, 5] = True
    fill = R.harmonic_fill if method == "harmonic" else R.inverse_distance_fill
    out = fill(grid, mask)
    known = grid[:, ~mask]
    assert (out[:, mask] >= known.min(1).values[:, None] - 1e-9).all()
    assert (out[:, mask] <= known.max(1).values[:, None] + 1e-9).all()


def test_inverse_distance_reproduces_constants_and_reaches_far():
    grid = torch.full((4, 12, 12), 2.5, dtype=torch.float64)
    mask = torch.ones(12, 12, dtype=torch.bool)
    mask[11, 11] = False
    assert torch.allclose(R.inverse_distance_fill(grid, mask), grid)


def test_cells_from_mask_accepts_latent_and_pixel_sizes():
    pixel = torch.zeros(1, 64, 80)
    pixel[0, 17, 33] = 1.0  # inside cell (2, 4)
    cells = R.cells_from_mask(pixel, 8, 10)
    assert cells.shape == (1, 8, 10) and cells.nonzero().tolist() == [[0, 2, 4]]
    assert torch.equal(R.cells_from_mask(cells[0].float(), 8, 10), cells)
    with pytest.raises(LatentLabInputError, match="MASK is 70x64"):
        R.cells_from_mask(torch.zeros(1, 64, 70), 8, 10)


def test_cells_from_report(flawed):
    image = D.random_images(1, 96, seed=2)
    report = P.probe(P.ProbeVAE(**D.plain_callables(flawed)), image, P.ProbeOptions()).report
    cells = R.cells_from_report(json.dumps(report), 12, 12)
    assert cells[0].nonzero().tolist() == [list(flawed.planted_cell(image.movedim(-1, 1)))]
    with pytest.raises(LatentLabInputError, match="12x12-cell latent but this latent is 16x16"):
        R.cells_from_report(json.dumps(report), 16, 16)
    with pytest.raises(LatentLabInputError, match="not a VAE Anomaly Probe report"):
        R.cells_from_report('{"flags": 3}', 12, 12)


@pytest.mark.parametrize("cells,message", [
    (torch.zeros(1, 6, 6, dtype=torch.bool), "No cell is marked"),
    (torch.ones(1, 6, 6, dtype=torch.bool), "Every cell"),
    (torch.ones(3, 6, 6, dtype=torch.bool), "3 items but the latent batch has 2"),
])
def test_bad_repair_requests(cells, message):
    with pytest.raises(LatentLabInputError, match=message):
        R.repair(torch.randn(2, 4, 6, 6), cells)


def minimal_report(cells, shape=(4, 12, 12), count=None):
    return {"latent": {"shape": list(shape)},
            "flags": {"count": len(cells) if count is None else count, "cells": [{"y": y, "x": x} for y, x in cells]}}


def test_report_cells_are_read_from_the_probe_schema():
    grid = R.cells_from_report(json.dumps(minimal_report([(0, 0), (11, 11), (3, 4)])), 12, 12)
    assert grid.shape == (1, 12, 12) and grid[0].nonzero().tolist() == [[0, 0], [3, 4], [11, 11]]


EDITED_REPORTS = [
    (minimal_report([(-1, 4)]), "y=-1, x=4, outside this 12x12-cell latent"),
    (minimal_report([(3, -1)]), "x=-1"),
    (minimal_report([(99, 4)]), "y=99"),
    (minimal_report([(3, 12)]), "x=12"),
    (minimal_report([(3, 4)], shape=(12, 12)), "latent shape is"),
    (minimal_report([(3, 4)], shape=(4, 12, 0)), "latent shape is"),
    (minimal_report([(3, 4)], count=-2), "flag count"),
    (minimal_report([(3, 4)], count=5), "lists 1 of 5 flagged cells"),
    ({"latent": {"shape": [4, 12, 12]}, "flags": {"count": 1, "cells": [{"y": 1.5, "x": 2}]}}, "whole-number"),
    ({"latent": {"shape": [4, 12, 12]}, "flags": {"count": 1, "cells": [{"y": True, "x": 2}]}}, "whole-number"),
    ({"latent": {"shape": [4, 12, 12]}, "flags": {"count": 1, "cells": [{"y": "3", "x": 2}]}}, "whole-number"),
    ({"latent": {"shape": [4, 12, 12]}, "flags": {"count": 1, "cells": [[3, 2]]}}, "whole-number"),
    ({"latent": {"shape": [4, 12, 12]}, "flags": {"count": 1, "cells": "3,2"}}, "flagged cells are"),
    ({"latent": {"shape": [4, 12, 12]}, "flags": {"cells": [{"y": 0, "x": 0}] * 145}}, "one entry per cell"),
    ({"latent": [4, 12, 12], "flags": {}}, "no 'latent' and 'flags'"),
    ([1, 2, 3], "not a JSON object"),
]


@pytest.mark.parametrize("report, message", EDITED_REPORTS, ids=[m for _, m in EDITED_REPORTS])
def test_an_edited_report_is_refused_before_any_cell_is_touched(report, message):
    with pytest.raises(LatentLabInputError, match=message):
        R.cells_from_report(json.dumps(report), 12, 12)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"latent": {"shape": [4, 12, 12]}, "flags": {"cells": [{"y": ' + "9" * 5000 + ', "x": 1}]}}', "not JSON"),
    ("{not json", "not JSON"),
    (["a list"], "list, not text"),
])
def test_a_report_that_is_not_json_is_refused_with_a_short_message(text, message):
    with pytest.raises(LatentLabInputError, match=message) as caught:
        R.cells_from_report(text, 12, 12)
    assert len(str(caught.value)) < 400


def test_an_oversized_report_is_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(R, "MAX_REPORT_CHARS", 100)
    with pytest.raises(LatentLabInputError, match="characters long"):
        R.cells_from_report(json.dumps(minimal_report([(1, 1)] * 10)), 12, 12)


@pytest.mark.parametrize("mask, message", [
    (torch.zeros(0, 6, 6), "MASK is empty"),
    (torch.zeros(1, 6, 6, dtype=torch.complex64), "real numbers"),
    (torch.zeros(1, 1, 6, 6), "batch, height, width"),
    ([[0.0]], "tensor"),
])
def test_bad_masks_are_refused(mask, message):
    with pytest.raises(LatentLabInputError, match=message):
        R.cells_from_mask(mask, 6, 6)


def test_bool_and_integer_masks_mark_cells():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 2, 3] = True
    assert R.cells_from_mask(mask, 6, 6)[0].nonzero().tolist() == [[2, 3]]
    assert R.cells_from_mask(mask.to(torch.uint8), 6, 6)[0].nonzero().tolist() == [[2, 3]]
    pixels = torch.zeros(1, 48, 48, dtype=torch.bool)
    pixels[0, 17, 25] = True
    assert R.cells_from_mask(pixels, 6, 6)[0].nonzero().tolist() == [[2, 3]]


def test_spot_repair_node_refuses_a_report_cell_outside_the_latent():
    from latent_lab.nodes.probe import LatentSpotRepair
    samples = torch.randn(1, 4, 12, 12)
    latent = {"samples": samples}
    with pytest.raises(LatentLabInputError, match="Latent Spot Repair.*y=-1"):
        LatentSpotRepair().run(latent, "harmonic", 3, 8, report=json.dumps(minimal_report([(-1, 4)])))
    out = LatentSpotRepair().run(latent, "harmonic", 3, 8, report=json.dumps(minimal_report([(11, 4)])))
    changed = (out["result"][0]["samples"] != samples).any(1)[0]
    assert changed.nonzero().tolist() == [[11, 4]]


@pytest.mark.parametrize("size, radius, fits", [(8, 3, True), (8, 4, False), (5, 1, True), (5, 2, False),
                                                (3, 1, False), (12, 5, True), (12, 6, False)])
def test_reprobe_refuses_a_radius_that_leaves_no_far_field(flawed, size, radius, fits):
    callables = D.plain_callables(flawed)
    latent = torch.randn(1, 4, size, size)
    cells = torch.zeros(1, size, size, dtype=torch.bool)
    cells[0, size // 2, size // 2] = True
    if fits:
        result = R.reprobe(callables["decode"], latent, R.repair(latent, cells), cells, radius, decodes=3)
        assert result["cells"][0]["before_influence"] is None or result["cells"][0]["before_influence"] >= 0
        return
    with pytest.raises(LatentLabInputError, match=f"radius of {radius} cells leaves no far field"):
        R.reprobe(callables["decode"], latent, R.repair(latent, cells), cells, radius, decodes=3)
