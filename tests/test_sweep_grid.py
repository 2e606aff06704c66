"""Labeled grid layout and drawing, and the Sweep Grid node on a real SWEEP_INFO."""
import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st

from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.grid import (BACKGROUND, MAX_LABEL, GridSpec, auto_font_size, check_budget, draw_grid,
                                  fit_text, grid_info, layout, resize_images, scaled_size, text_width, wrap_lines)
from latent_lab.core.sweep_plan import make_cells, sweep_info
from latent_lab.nodes.sweep import SweepGrid, grid_spec

FAST = settings(max_examples=30, deadline=None)
RUN = {"chunks": [6], "rows_evaluated": 0, "rows_separate_runs": 0, "rows_shared": 0, "noise": "none"}


def spec_for(rows, cols, w=64, h=48, **kw):
    return GridSpec(rows, cols, w, h, col_labels=[f"CFG {c}" for c in range(cols)],
                    row_labels=[f"seed {r}" for r in range(rows)] if rows > 1 else None,
                    x_title="CFG scale", y_title="seed" if rows > 1 else None, **kw)


def boxes_overlap(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def distinct_images(n, h, w):
    base = torch.linspace(0, 1, n).view(n, 1, 1, 1)
    ramp = torch.linspace(0, 1, w).view(1, 1, w, 1)
    return (base * 0.7 + ramp * 0.3).expand(n, h, w, 3).clone()


@FAST
@given(st.integers(1, 4), st.integers(1, 6), st.integers(8, 96), st.integers(8, 96), st.booleans())
def test_layout_places_cells_labels_and_titles_without_overlap(rows, cols, w, h, footer):
    spec = spec_for(rows, cols, w, h, footer=["euler · normal · 20 steps"] if footer else [])
    grid = layout(spec)
    cell_boxes = [(x, y, w, h) for x, y in grid.cells]
    assert len(cell_boxes) == rows * cols
    everything = cell_boxes + grid.col_label_boxes + grid.row_label_boxes + \
        [b for b in (grid.x_title_box, grid.y_title_box, grid.footer_box) if b]
    for box in everything:
        x, y, bw, bh = box
        assert 0 <= x and 0 <= y and x + bw <= grid.width and y + bh <= grid.height
    for i, a in enumerate(everything):
        for b in everything[i + 1:]:
            assert not boxes_overlap(a, b), (a, b)
    # row-major order; labels sit over their columns and beside their rows
    assert [p for p in grid.cells] == sorted(grid.cells, key=lambda p: (p[1], p[0]))
    for (cx, _), (lx, ly, lw, lh) in zip(grid.cells[:cols], grid.col_label_boxes):
        assert cx == lx and lw == w and ly + lh <= grid.cells[0][1]
    for r, (lx, ly, lw, lh) in enumerate(grid.row_label_boxes):
        assert ly == grid.cells[r * cols][1] and lx + lw <= grid.cells[0][0]
    assert (grid.footer_box is not None) == footer


def test_cells_are_pasted_unchanged_and_labels_are_drawn():
    images = distinct_images(6, 48, 64)
    spec = spec_for(2, 3, footer=["euler · normal · 8 steps"])
    picture = draw_grid(images, spec, 10 ** 7)
    grid = layout(spec)
    assert picture.shape == (1, grid.height, grid.width, 3)
    expected = (images * 255).round() / 255
    for image, (x, y) in zip(expected, grid.cells):
        assert torch.allclose(picture[0, y:y + 48, x:x + 64], image, atol=1e-6)
    background = torch.tensor(BACKGROUND, dtype=torch.float32) / 255
    for box in grid.col_label_boxes + grid.row_label_boxes + [grid.x_title_box, grid.y_title_box, grid.footer_box]:
        x, y, w, h = box
        region = picture[0, y:y + h, x:x + w]
        assert (region - background).abs().amax(-1).gt(0.2).any(), f"nothing drawn in {box}"


def test_gaps_between_cells_stay_background():
    picture = draw_grid(torch.ones(4, 32, 32, 3), GridSpec(2, 2, 32, 32, gap=6), 10 ** 6)
    grid = layout(GridSpec(2, 2, 32, 32, gap=6))
    x0, y0 = grid.cells[0]
    gap = picture[0, y0:y0 + 32, x0 + 32:x0 + 38]
    assert torch.allclose(gap, torch.tensor(BACKGROUND, dtype=torch.float32) / 255)


def test_budget_is_refused_before_drawing():
    spec = spec_for(4, 8, 512, 512)
    grid = layout(spec)
    with pytest.raises(LatentLabInputError, match="megapixels"):
        check_budget(grid, grid.pixels - 1)
    check_budget(grid, grid.pixels)
    with pytest.raises(LatentLabInputError, match="cell_scale"):
        draw_grid(torch.zeros(32, 512, 512, 3), spec, 1_000_000)


def test_wrong_image_count_or_size_is_refused():
    with pytest.raises(LatentLabInputError, match="6 cells but 5 images"):
        draw_grid(torch.zeros(5, 48, 64, 3), spec_for(2, 3), 10 ** 7)
    with pytest.raises(LatentLabInputError, match="expects 64x48"):
        draw_grid(torch.zeros(6, 40, 64, 3), spec_for(2, 3), 10 ** 7)


def test_text_fitting_wrapping_and_font_size():
    text, size = fit_text("CFG 12.3456", 30, 20)
    assert text_width(text, size) <= 30 and size >= 8
    assert fit_text("CFG 7", 400, 20) == ("CFG 7", 20)
    lines = wrap_lines(["a b c d e f g h i j k l m n o p"], 40, 12)
    assert len(lines) > 1 and all(text_width(l, 12) <= 40 or " " not in l for l in lines)
    assert auto_font_size(64, 64) == 12 and auto_font_size(512, 512) == 32 and auto_font_size(4096, 4096) == 64


def test_resize_keeps_range_and_size():
    images = distinct_images(3, 40, 60)
    assert scaled_size(60, 40, 0.5) == (30, 20) and scaled_size(3, 3, 0.01) == (1, 1)
    small = resize_images(images, 30, 20)
    assert small.shape == (3, 20, 30, 3) and small.min() >= 0 and small.max() <= 1
    assert resize_images(images, 60, 40) is images


def make_info(cfgs, seeds):
    return sweep_info(cfgs, seeds, make_cells(cfgs, seeds),
                      {"sampler": "euler", "scheduler": "normal", "steps": 8, "denoise": 1.0, "seed": seeds[0]}, RUN)


def test_sweep_grid_node_builds_a_labeled_grid():
    info = make_info([3.0, 5.5, 7.0], [42, 43])
    images = distinct_images(6, 48, 64)
    before = images.clone()
    out = SweepGrid().grid(images, info, True, 1.0, 0, 32.0)
    picture = out["result"][0]
    spec = grid_spec(info, 64, 48, True, 0)
    grid = layout(spec)
    assert picture.shape == (1, grid.height, grid.width, 3)
    assert spec.col_labels == ["CFG 3", "CFG 5.5", "CFG 7"] and spec.row_labels == ["seed 42", "seed 43"]
    assert spec.footer == ["euler · normal · 8 steps · denoise 1"]
    assert torch.equal(images, before)
    one_row = grid_spec(make_info([3.0, 7.0], [9]), 64, 48, False, 20)
    assert one_row.row_labels is None and one_row.y_title is None and one_row.footer == [] and one_row.font_size == 20


def test_sweep_grid_node_scales_cells_and_refuses_big_grids():
    info = make_info([3.0, 7.0], [1])
    small = SweepGrid().grid(distinct_images(2, 96, 128), info, False, 0.5, 0, 32.0)["result"][0]
    full = SweepGrid().grid(distinct_images(2, 96, 128), info, False, 1.0, 0, 32.0)["result"][0]
    assert small.shape[2] < full.shape[2]
    with pytest.raises(LatentLabInputError, match="Sweep Grid.*megapixels"):
        SweepGrid().grid(distinct_images(2, 96, 128), info, False, 1.0, 0, 0.01)
    with pytest.raises(LatentLabInputError, match="Sweep Grid.*3 images but the sweep has 2 cells"):
        SweepGrid().grid(distinct_images(3, 96, 128), info, False, 1.0, 0, 32.0)
    with pytest.raises(LatentLabInputError, match="SWEEP_INFO"):
        SweepGrid().grid(distinct_images(2, 96, 128), {"cells": []}, False, 1.0, 0, 32.0)


def edited(info, path, value):
    """A deep copy of info with the entry at `path` (keys and indices) set to value, or removed for DELETE."""
    out = copy.deepcopy(info)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


DELETE = object()
HAND_MADE = [
    (("axes", "x"), DELETE, "no axis 'x'"),
    (("axes",), [1, 2], "no 'axes' dict"),
    (("axes", "x", "values"), [], "1 to"),
    (("axes", "x", "values"), [3.0, float("nan")], "not CFG values"),
    (("axes", "x", "values"), [3.0, 1e300], "not CFG values"),
    (("axes", "y", "values"), [1.5], "not seeds"),
    (("axes", "y", "values"), [-1], "not seeds"),
    (("axes", "y", "values"), [10 ** 5000], "not seeds"),
    (("axes", "x", "labels"), ["CFG 3"], "one label per value"),
    (("axes", "x", "labels", 0), 7, "not text"),
    (("axes", "x", "labels", 0), "x" * 100_000, "characters long"),
    (("axes", "x", "title"), None, "not text"),
    (("cells",), "all", "no 'cells' list"),
    (("cells",), [{}] * 3, "lists 3 cells for 2 x 1"),
    (("order",), "cfg-major", "cell order"),
    (("settings",), [1], "settings is list"),
    (("settings", "denoise"), "1.0", "not a number"),
    (("settings", "denoise"), float("nan"), "not a number"),
    (("settings", "steps"), 10 ** 5000, "5000|bit integer"),
    (("settings", "sampler"), ["euler"], "not text"),
]


@pytest.mark.parametrize("path, value, match", HAND_MADE, ids=[f"{'.'.join(map(str, p))}" for p, _, _ in HAND_MADE])
def test_a_hand_made_sweep_info_is_refused_with_what_is_wrong(path, value, match):
    info = edited(make_info([3.0, 7.0], [1]), path, value)
    with pytest.raises(LatentLabInputError, match=match) as caught:
        SweepGrid().grid(distinct_images(2, 16, 16), info, True, 1.0, 0, 32.0)
    assert str(caught.value).startswith("Latent Lab · Sweep Grid") and len(str(caught.value)) < 400


def test_grid_info_keeps_a_real_sweep_info_and_copies_it():
    info = make_info([3.0, 5.5, 7.0], [42, 43])
    checked = grid_info(info)
    assert checked["axes"] == info["axes"] and checked["cells"] == info["cells"]
    assert checked["settings"] == info["settings"] and checked is not info
    longest = edited(info, ("axes", "x", "labels", 0), "C" * MAX_LABEL)
    assert grid_info(longest)["axes"]["x"]["labels"][0] == "C" * MAX_LABEL


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=20))
def test_any_json_value_as_sweep_info_gives_a_grid_or_a_clear_error(value):
    for info in (value, {"version": 1, "axes": value, "cells": value},
                 {"version": 1, "axes": {"x": value, "y": value}, "cells": [{}]}):
        try:
            SweepGrid().grid(distinct_images(1, 8, 8), info, True, 1.0, 0, 32.0)
        except LatentLabInputError:
            pass


@pytest.mark.parametrize("cell_scale, max_megapixels, match", [
    (float("nan"), 32.0, "cell_scale is nan"), (0.0, 32.0, "cell_scale is 0.0"), (1.0, float("nan"), "max_megapixels is nan"),
    (1.0, True, "max_megapixels is True")])
def test_sweep_grid_refuses_nan_scale_and_budget_with_its_name(cell_scale, max_megapixels, match):
    info = make_info([3.0, 7.0], [1])
    with pytest.raises(LatentLabInputError, match=f"Sweep Grid: {match}"):
        SweepGrid().grid(distinct_images(2, 16, 16), info, True, cell_scale, 0, max_megapixels)


def test_a_guidance_sweep_grid_has_guidance_columns_or_rows_and_a_third_axis_is_refused():
    settings_ = {"sampler": "euler", "scheduler": "simple", "steps": 4, "denoise": 1.0, "seed": 3}
    columns = sweep_info([1.0], [3], make_cells([1.0], [3], [2.0, 3.5, 5.0]), settings_, RUN, "", "",
                         [2.0, 3.5, 5.0])
    spec = grid_spec(grid_info(columns), 64, 48, True, 0)
    assert spec.col_labels == ["guidance 2", "guidance 3.5", "guidance 5"] and spec.x_title == "guidance"
    assert spec.footer == ["euler · simple · 4 steps · denoise 1 · CFG 1 · seed 3"]
    out = SweepGrid().grid(distinct_images(3, 48, 64), columns, True, 1.0, 0, 32.0)["result"][0]
    assert out.shape == (1, layout(spec).height, layout(spec).width, 3)
    rows = sweep_info([1.0, 4.0], [3], make_cells([1.0, 4.0], [3], [2.0, 3.5]), settings_, RUN, "", "", [2.0, 3.5])
    spec = grid_spec(grid_info(rows), 64, 48, True, 0)
    assert spec.row_labels == ["guidance 2", "guidance 3.5"] and spec.col_labels == ["CFG 1", "CFG 4"]
    assert SweepGrid().grid(distinct_images(4, 48, 64), rows, False, 1.0, 0, 32.0)["result"][0].shape[0] == 1
    three = sweep_info([1.0, 4.0], [3, 4], make_cells([1.0, 4.0], [3, 4], [2.0, 3.5]), settings_, RUN, "", "",
                       [2.0, 3.5])
    with pytest.raises(LatentLabInputError, match="third axis \\(guidance\\).*two") as caught:
        SweepGrid().grid(distinct_images(8, 48, 64), three, False, 1.0, 0, 32.0)
    assert "one value for the third" in caught.value.fix


def test_a_decoded_video_sweep_is_laid_out_by_each_cells_middle_frame():
    info = make_info([3.0, 7.0], [1])
    frames = distinct_images(2 * 5, 48, 64)  # VAE Decode of [2 cells, 5 frames]: cell after cell
    video = SweepGrid().grid(frames, info, False, 1.0, 0, 32.0)["result"][0]
    stills = SweepGrid().grid(frames[[2, 7]], info, False, 1.0, 0, 32.0)["result"][0]
    assert torch.equal(video, stills)
    with pytest.raises(LatentLabInputError, match="9 images but the sweep has 2 cells"):
        SweepGrid().grid(frames[:9], info, False, 1.0, 0, 32.0)
