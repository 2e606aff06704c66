"""Sweep cells, their order and labels, chunk planning and the SWEEP_INFO value."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.sweep_plan import (SETTINGS, Cell, check_cell_count, check_info, check_settings, chunk_capacity,
                                        make_cells, plan_chunks, settings_line, state_bytes_per_cell, sweep_info)

FAST = settings(max_examples=120, deadline=None)


def test_cells_are_seed_major_with_labels():
    cells = make_cells([3.0, 5.5, 7.0], [42, 43])
    assert [(c.seed, c.cfg) for c in cells] == [(42, 3.0), (42, 5.5), (42, 7.0), (43, 3.0), (43, 5.5), (43, 7.0)]
    assert [c.index for c in cells] == list(range(6))
    assert all(c.index == c.row * 3 + c.col for c in cells)
    assert cells[4].label == "CFG 5.5 · seed 43"
    assert [c.label for c in make_cells([7.5, 12.0], [1])] == ["CFG 7.5", "CFG 12"]


def test_cell_limit():
    check_cell_count(64, 64)
    with pytest.raises(LatentLabInputError, match="max_cells"):
        check_cell_count(65, 64)


def test_capacity_from_memory_and_max_batch():
    assert chunk_capacity(10_000, 1_000) == 10
    assert chunk_capacity(10_000, 1_000, max_batch=4) == 4
    assert chunk_capacity(10, 1_000) == 1          # never below one cell
    assert chunk_capacity(10_000, 0, max_batch=0) > 10 ** 6
    assert state_bytes_per_cell(4 * 8 * 8) == 4 * 8 * 8 * 4 * 12


@FAST
@given(st.integers(1, 6), st.integers(1, 12), st.integers(1, 40))
def test_chunks_cover_cells_in_order_within_capacity(rows, cols, capacity):
    groups = [r for r in range(rows) for _ in range(cols)]
    chunks = plan_chunks(groups, capacity)
    assert [i for chunk in chunks for i in chunk] == list(range(rows * cols))
    assert all(1 <= len(chunk) <= capacity for chunk in chunks)
    if cols <= capacity:
        # whole seed rows stay together, in as few chunks as whole rows allow, spread evenly
        for chunk in chunks:
            rows_in = {groups[i] for i in chunk}
            assert sum(groups.count(r) for r in rows_in) == len(chunk)
        rows_per_chunk = [len(chunk) // cols for chunk in chunks]
        assert len(chunks) == -(-rows // (capacity // cols))
        assert max(rows_per_chunk) - min(rows_per_chunk) <= 1
    else:
        # a row larger than the capacity is split evenly and chunks never mix rows
        for chunk in chunks:
            assert len({groups[i] for i in chunk}) == 1
        sizes = [len(c) for c in chunks if groups[c[0]] == 0]
        assert max(sizes) - min(sizes) <= 1 and len(sizes) == -(-cols // capacity)


@FAST
@given(st.integers(1, 64), st.integers(1, 64))
def test_one_row_splits_into_the_fewest_even_chunks(cells, capacity):
    chunks = plan_chunks([0] * cells, capacity)
    sizes = [len(c) for c in chunks]
    assert len(chunks) == -(-cells // capacity)
    assert max(sizes) - min(sizes) <= 1


def test_whole_rows_are_packed_evenly():
    groups = [0] * 4 + [1] * 4 + [2] * 4
    assert [len(c) for c in plan_chunks(groups, 8)] == [8, 4]
    assert [len(c) for c in plan_chunks(groups, 12)] == [12]
    assert [len(c) for c in plan_chunks(groups, 5)] == [4, 4, 4]
    assert [len(c) for c in plan_chunks(groups, 3)] == [2, 2, 2, 2, 2, 2]
    with pytest.raises(LatentLabInputError):
        plan_chunks(groups, 0)


def test_info_is_json_and_names_axes_cells_and_settings():
    cells = make_cells([3.0, 7.5], [10, 11, 12])
    run = {"chunks": [6], "rows_evaluated": 1, "rows_separate_runs": 2, "rows_shared": 1, "noise": "x"}
    info = sweep_info([3.0, 7.5], [10, 11, 12], cells,
                      {"sampler": "euler", "scheduler": "normal", "steps": 20, "denoise": 1.0, "seed": 10},
                      run, "3, 7.5", "+3")
    assert json.loads(json.dumps(info)) == info
    assert info["axes"]["x"]["labels"] == ["CFG 3", "CFG 7.5"]
    assert info["axes"]["y"]["values"] == [10, 11, 12] and info["axes"]["y"]["text"] == "+3"
    assert [c["index"] for c in info["cells"]] == list(range(6)) and info["cells"][3]["seed"] == 11
    assert check_info(info) is info
    assert settings_line(info) == "euler · normal · 20 steps · denoise 1"
    one_seed = sweep_info([3.0], [5], make_cells([3.0], [5]), {"steps": 8, "denoise": 0.5}, run)
    assert settings_line(one_seed) == "8 steps · denoise 0.5 · seed 5"
    for bad in (None, {}, {"version": 99, "axes": {}, "cells": []}, "json"):
        with pytest.raises(LatentLabInputError, match="SWEEP_INFO"):
            check_info(bad)


def test_cell_is_immutable():
    cell = Cell(0, 0, 0, 7.0, 1, "CFG 7")
    with pytest.raises(Exception):
        cell.cfg = 8.0


# ---- the node's number inputs ---------------------------------------------------------------------------------

def in_range(name):
    low, high, whole, _ = SETTINGS[name]
    return st.integers(low, high) if whole else st.floats(low, high)


@FAST
@given(st.sampled_from(sorted(SETTINGS)).flatmap(lambda name: st.tuples(st.just(name), in_range(name))))
def test_settings_in_range_come_back_as_their_type(named):
    name, value = named
    checked = check_settings(**{name: value})[name]
    assert checked == value and type(checked) is (int if SETTINGS[name][2] else float)


@FAST
@given(st.sampled_from(sorted(SETTINGS)),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2 ** 70, 2 ** 70),
                 st.text(max_size=200), st.booleans(), st.none()))
def test_any_other_setting_is_refused_with_its_name_and_the_fix(name, value):
    low, high, whole, fix = SETTINGS[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    acceptable = number and value == value and low <= value <= high and (not whole or float(value).is_integer())
    if acceptable:
        assert check_settings(**{name: value})[name] == value
        return
    with pytest.raises(LatentLabInputError) as caught:
        check_settings(**{name: value})
    assert caught.value.problem.startswith(f"{name} is ") and caught.value.fix == fix
    assert len(caught.value.problem) < 200


@pytest.mark.parametrize("name, value, problem", [
    ("denoise", float("nan"), "denoise is nan, not a finite number."),
    ("denoise", float("inf"), "denoise is inf, not a finite number."),
    ("denoise", 1.5, "denoise is 1.5, outside 0.0..1.0."),
    ("steps", 2.5, "steps is 2.5, not a whole number."),
    ("steps", 0, "steps is 0, outside 1..10000."),
    ("seed", -1, "seed is -1, outside 0..18446744073709551615."),
    ("max_cells", "64", "max_cells is str '64', not a number."),
    ("max_batch", True, "max_batch is bool True, not a number."),
])
def test_bad_settings_say_what_was_wrong(name, value, problem):
    with pytest.raises(LatentLabInputError) as caught:
        check_settings(**{name: value})
    assert caught.value.problem == problem


def test_a_huge_integer_is_described_without_printing_it():
    with pytest.raises(LatentLabInputError) as caught:
        check_settings(seed=10 ** 5000)
    assert "-bit integer, outside" in caught.value.problem and len(caught.value.problem) < 100


def test_whole_floats_become_ints():
    assert check_settings(steps=20.0, seed=7.0, max_batch=0.0, max_cells=64.0, denoise=1) == \
        {"steps": 20, "seed": 7, "max_batch": 0, "max_cells": 64, "denoise": 1.0}


def test_guidance_cells_are_seed_major_then_guidance_then_cfg():
    cells = make_cells([1.0, 2.0], [7, 8], [2.5, 3.5, 4.5])
    assert [(c.seed, c.guidance, c.cfg) for c in cells] == [
        (s, g, c) for s in (7, 8) for g in (2.5, 3.5, 4.5) for c in (1.0, 2.0)]
    assert [c.index for c in cells] == list(range(12))
    assert cells[3].label == "CFG 2 · guidance 3.5 · seed 7"
    assert all(c.guidance is None for c in make_cells([3.0, 7.0], [1]))


@pytest.mark.parametrize("cfgs, seeds, guidances, axes, first_label", [
    ([1.0], [5], [2.0, 3.5, 5.0], ("guidance", "seed"), "guidance 2"),
    ([1.0], [5, 6], [2.0, 3.5], ("guidance", "seed"), "guidance 2 · seed 5"),
    ([1.0, 4.0], [5], [2.0, 3.5], ("cfg", "guidance"), "CFG 1 · guidance 2"),
    ([1.0, 4.0], [5, 6], [3.5], ("cfg", "seed"), "CFG 1 · seed 5"),
])
def test_guidance_sweeps_lay_out_two_axes_with_rows_and_columns_in_cell_order(cfgs, seeds, guidances, axes,
                                                                              first_label):
    cells = make_cells(cfgs, seeds, guidances)
    info = json.loads(json.dumps(sweep_info(cfgs, seeds, cells, {"seed": seeds[0]}, {}, "", "", guidances, "g")))
    x, y = info["axes"]["x"], info["axes"]["y"]
    assert (x["name"], y["name"]) == axes and "z" not in info["axes"]
    assert cells[0].label == first_label
    assert [c["index"] for c in info["cells"]] == [c["row"] * len(x["values"]) + c["col"] for c in info["cells"]]
    assert len(x["values"]) * len(y["values"]) == len(cells)
    for cell in info["cells"]:
        assert x["labels"][cell["col"]] in cell["label"] or len(x["values"]) == 1
    if "guidance" not in axes:
        assert info["settings"]["guidance"] == guidances[0] and "guidance 3.5" in settings_line(info)
    if x["name"] == "guidance":
        assert x["labels"][1] == f"guidance {guidances[1]:g}" and "CFG 1" in settings_line(info)


def test_a_sweep_over_cfg_guidance_and_seeds_has_a_third_axis():
    cells = make_cells([1.0, 4.0], [5, 6], [2.0, 3.5])
    info = sweep_info([1.0, 4.0], [5, 6], cells, {}, {}, "", "", [2.0, 3.5])
    assert [info["axes"][k]["name"] for k in ("x", "y", "z")] == ["cfg", "seed", "guidance"]
    assert cells[5].label == "CFG 4 · guidance 2 · seed 6"


def test_one_seed_guidance_grid_footer_names_the_seed_from_the_settings():
    cells = make_cells([1.0, 4.0], [9], [2.0, 3.5])
    info = sweep_info([1.0, 4.0], [9], cells, {"steps": 4, "seed": 9}, {}, "", "", [2.0, 3.5])
    assert settings_line(info) == "4 steps · seed 9"


def test_cells_of_different_seeds_share_a_chunk_unless_the_model_conditions_on_the_seed():
    from latent_lab.adapters.sweep_sampler import plan_cell_chunks
    cells = make_cells([1.0, 2.0, 3.0], [5, 6, 7], [2.5])
    assert plan_cell_chunks(cells, 9, False) == [list(range(9))]
    assert plan_cell_chunks(cells, 9, True) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert plan_cell_chunks(cells, 2, True) == [[0, 1], [2], [3, 4], [5], [6, 7], [8]]
    for capacity in range(1, 10):
        chunks = plan_cell_chunks(cells, capacity, True)
        assert [i for chunk in chunks for i in chunk] == list(range(9))
        assert all(len({cells[i].seed for i in chunk}) == 1 and len(chunk) <= capacity for chunk in chunks)
