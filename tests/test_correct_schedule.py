"""Correction schedules: operations, text form, presets, channel choices and sampling progress."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import correct_reference as ref
from latent_lab.core import channels, correct_ops as ops, correct_schedule as schedules
from latent_lab.core import sampling_progress as progress
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import FORMATS, SD15, SDXL

SETTINGS = settings(max_examples=60, deadline=None)

percent = st.floats(0, 100) | st.floats(0, 100).map(lambda v: round(v, 2))
strength = st.floats(0, 1)
OPTION_VALUES = {
    "soft_clamp": {"threshold": st.floats(0, 3), "boundary": st.floats(3.5, 8),
                   "mode": st.sampled_from(ops.CLAMP_MODES), "relative": st.booleans()},
    "center": {"channels": st.sampled_from(["auto", "all", "0,1", "luminance,2:0.5"]),
               "channel": strength, "global": strength},
    "maximize": {"channels": st.sampled_from(["auto", "0-2", "3"]), "boundary": st.floats(1, 9)},
    "color_balance": {"channels": st.sampled_from(["auto", "all"]), "target": st.sampled_from(["neutral", "#808080"])},
}


@st.composite
def operations(draw):
    kind = draw(st.sampled_from(schedules.OPERATIONS))
    start, end = sorted([draw(percent), draw(percent)])
    keys = draw(st.lists(st.sampled_from(sorted(OPTION_VALUES[kind])), unique=True))
    options = {key: draw(OPTION_VALUES[kind][key]) for key in keys}
    return schedules.operation(kind, start, end, draw(strength), **options)


@SETTINGS
@given(st.lists(operations(), max_size=6))
def test_schedule_text_reads_back_to_the_same_schedule(schedule):
    assert schedules.parse_schedule(schedules.schedule_text(schedule)) == tuple(schedule)


def test_schedule_text_allows_comments_blank_lines_and_hex_targets():
    text = """
    # early
    soft_clamp 0-5% threshold=3 boundary=4   # pull outliers in
    color_balance 50-100 target=#a0a0a0 strength=0.5
    """
    first, second = schedules.parse_schedule(text)
    assert (first.kind, first.start, first.end, first.option("threshold")) == ("soft_clamp", 0, 5, 3.0)
    assert second.option("target") == "#a0a0a0" and second.strength == 0.5


@pytest.mark.parametrize("line, words", [
    ("center 30-10%", "starts at 30% but ends earlier"),
    ("center 0-130%", "outside 0-100%"),
    ("blur 0-10%", "unknown operation 'blur'"),
    ("center", "no window"),
    ("center 0-10% channel=lots", "not a number"),
    ("center 0-10% boundary=4", "has no option boundary"),
    ("center 0-10% strength=2", "outside 0..1"),
    ("center 0-10% strength", "not key=value"),
    ("soft_clamp 0-10% relative=maybe", "not yes or no"),
])
def test_bad_schedule_lines_say_which_line_and_what(line, words):
    with pytest.raises(LatentLabInputError) as info:
        schedules.parse_schedule("maximize 90-100%\n" + line)
    assert "line 2" in str(info.value) and words in str(info.value)


def test_operation_refuses_a_window_whose_start_is_after_its_end():
    with pytest.raises(LatentLabInputError, match="ends earlier"):
        schedules.operation("center", 60, 40)


@pytest.mark.parametrize("start, end, inside, outside", [(0, 30, [0, 29.99], [30, 50]), (90, 100, [90, 99.999], [89.9]),
                                                         (40, 40, [], [40])])
def test_windows_are_half_open(start, end, inside, outside):
    op = schedules.operation("center", start, end)
    assert all(op.active(p) for p in inside) and not any(op.active(p) for p in outside)


# ------------------------------------------------------------------------------------------------ blog preset

def test_blog_windows_hold_exactly_the_blogs_timesteps():
    clamp, center_mid, center_late, maximize = schedules.blog_schedule()
    for t in range(1000):
        p = ref.timestep_percent(t)
        assert clamp.active(p) == (t > 950)
        assert center_mid.active(p) == (t > 700)
        assert center_late.active(p) == (1 < t < 100)
        assert maximize.active(p) == (1 < t < 100)


def test_blog_preset_operations_and_order():
    ops = schedules.blog_schedule()
    assert [op.kind for op in ops] == ["soft_clamp", "center", "center", "maximize"]
    assert ops[0].option("relative") and ops[0].option("boundary") == 0.998 and ops[0].option("threshold") == 0.998
    assert (ops[1].option("channel"), ops[1].option("global")) == (0.8, 0.8)
    assert (ops[2].option("channel"), ops[2].option("global")) == (0.6, 1.0)
    assert "maximize" not in [op.kind for op in schedules.PRESETS["blog without maximize"]()]


def test_timestep_percent_is_comfyuis_percent_for_discrete_models():
    # ComfyUI ModelSamplingDiscrete.percent_to_sigma(p) = sigma(timestep (1 - p) * 999)
    for t in (999, 950, 700, 100, 1, 0):
        assert (1 - ref.timestep_percent(t) / 100) * 999 == pytest.approx(t)


# ------------------------------------------------------------------------------------------------ channels

@pytest.mark.parametrize("spec, expected", [
    ("all", [1, 1, 1, 1]), ("0,2", [1, 0, 1, 0]), ("0-2", [1, 1, 1, 0]), ("c1-c3", [0, 1, 1, 1]),
    ("luminance, pattern:0.25", [1, 0, 0, 0.25]), ("Cyan/Red", [0, 1, 0, 0]), ("auto", [1, 1, 1, 1]),
])
def test_channel_choices_for_sdxl_center(spec, expected):
    assert channels.parse_channels(spec, 4, SDXL, "center") == expected


@pytest.mark.parametrize("fmt, operation, expected", [
    (SDXL, "maximize", [0, 1, 2]), (SDXL, "color_balance", [0, 1, 2]), (SDXL, "center", [0, 1, 2, 3]),
    (SD15, "maximize", [0, 1, 2, 3]), (SD15, "color_balance", [0, 1, 2, 3]),
])
def test_auto_channels_follow_the_format(fmt, operation, expected):
    assert channels.selected(channels.parse_channels("auto", 4, fmt, operation)) == expected


@pytest.mark.parametrize("key", ["sd3", "flux"])
def test_auto_channels_are_refused_for_16_channel_latents(key):
    with pytest.raises(LatentLabInputError, match="no known meanings") as info:
        channels.parse_channels("auto", 16, FORMATS[key], "center")
    assert "explicitly" in str(info.value)
    assert channels.parse_channels("all", 16, FORMATS[key], "center") == [1.0] * 16


@pytest.mark.parametrize("spec, words", [("4", "does not exist"), ("7", "does not exist"), ("red", "Unknown channel"),
                                         ("2-0", "runs backwards"), ("", "No channels"), ("0:x", "not a number")])
def test_unknown_channels_are_refused_with_the_valid_choices(spec, words):
    with pytest.raises(LatentLabInputError, match=words) as info:
        channels.parse_channels(spec, 4, SDXL, "center")
    if "Unknown" in words or "exist" in words:
        assert "0..3" in str(info.value) and "luminance" in str(info.value)


# ------------------------------------------------------------------------------------------------ compiled schedules

def test_compile_checks_options_before_sampling():
    with pytest.raises(LatentLabInputError, match="threshold"):
        schedules.compile_schedule([schedules.operation("soft_clamp", 0, 10, threshold=5.0, boundary=4.0)], SDXL)
    with pytest.raises(LatentLabInputError, match="explicitly"):
        schedules.compile_schedule(schedules.blog_schedule(), FORMATS["flux"])
    with pytest.raises(LatentLabInputError, match="hex color"):
        schedules.compile_schedule(schedules.parse_schedule("color_balance 0-10 target=#12"), SD15)


def test_apply_schedule_runs_only_the_operations_in_each_items_window():
    steps = schedules.compile_schedule(schedules.parse_schedule("center 0-50% channels=all global=0"), SDXL)
    x = torch.randn(3, 4, 5, 5) + 3
    before = x.clone()
    out = schedules.apply_schedule(x, steps, [10.0, 60.0, 49.0])
    assert out[0].mean(dim=(1, 2)).abs().max() < 1e-5 and out[2].mean(dim=(1, 2)).abs().max() < 1e-5
    assert torch.equal(out[1], x[1])
    assert torch.equal(x, before)


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.9])
def test_a_scheduled_center_blends_toward_the_full_correction_like_every_operation(amount):
    (step,) = schedules.compile_schedule(schedules.parse_schedule("center 0-100 channels=all channel=0.8 global=0.8"),
                                       SDXL)
    x = torch.randn(2, 4, 6, 6) + torch.tensor([2.0, -1.0, 0.5, 3.0]).view(1, 4, 1, 1)
    full = step.run(x, 1.0)
    torch.testing.assert_close(step.run(x, amount), ref.lerp(x, full, amount))


@pytest.mark.parametrize("line, match", [
    ("soft_clamp 0-10 boundary=auto", "no boundary=auto"),
    ("center 0-10 channel=5", "channel=5.0 of 'center' is outside 0..1"),
    ("center 0-10 global=-1", "global=-1.0 of 'center' is outside 0..1"),
])
def test_options_outside_their_range_are_refused_with_the_line(line, match):
    with pytest.raises(LatentLabInputError, match=match) as caught:
        schedules.parse_schedule(line)
    assert "Schedule line 1" in caught.value.problem


def test_apply_schedule_returns_the_input_itself_when_nothing_applies():
    steps = schedules.compile_schedule(schedules.blog_schedule(), SDXL)
    x = torch.randn(2, 4, 5, 5)
    assert schedules.apply_schedule(x, steps, [50.0, 50.0]) is x
    assert schedules.apply_schedule(x, steps, [0.0, 0.0], strength=0.0) is x


def test_apply_schedule_applies_in_order_and_blends_by_strength():
    schedule = schedules.parse_schedule("center 0-100 channels=all global=0\nmaximize 0-100 channels=all boundary=2 strength=0.5")
    steps = schedules.compile_schedule(schedule, SD15)
    x = torch.randn(1, 4, 6, 6) + 1
    centered = ops.center(x, [1.0] * 4, 0.0)
    expected = ref.lerp(centered, ops.maximize(centered, 2.0, [0, 1, 2, 3]), 0.5)
    torch.testing.assert_close(schedules.apply_schedule(x, steps, [5.0]), expected)
    half = schedules.apply_schedule(x, steps, [5.0], strength=0.5)
    centered_half = ref.lerp(x, centered, 0.5)
    torch.testing.assert_close(half, ref.lerp(centered_half, ops.maximize(centered_half, 2.0, [0, 1, 2, 3]), 0.25))


# ------------------------------------------------------------------------------------------------ progress

def karras(n, low=0.03, high=14.6, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    sigmas = (high ** (1 / rho) + ramp * (low ** (1 / rho) - high ** (1 / rho))) ** rho
    return sigmas.tolist() + [0.0]


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_run_progress_puts_step_i_at_i_over_n(steps):
    sigmas = karras(steps)
    assert [progress.run_progress(s, sigmas) for s in sigmas[:-1]] == pytest.approx([i / steps for i in range(steps)])


@SETTINGS
@given(st.integers(2, 30), st.floats(0.001, 0.999))
def test_run_progress_between_steps_is_monotone_and_below_one(steps, fraction):
    sigmas = karras(steps)
    probes = sorted([sigmas[0] * (1 - fraction) + sigmas[-2] * fraction, sigmas[1] * 0.999, sigmas[-2] * 0.5,
                     sigmas[-2] * 1e-6], reverse=True)
    values = [progress.run_progress(s, sigmas) for s in probes]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(0 <= v < 1 for v in values)


def test_run_progress_of_an_img2img_tail_starts_at_zero():
    full = karras(20)
    tail = full[-11:]  # what KSampler keeps for denoise 0.5
    assert progress.run_progress(tail[0], tail) == 0.0
    assert progress.run_progress(tail[5], tail) == pytest.approx(0.5)


def test_run_progress_handles_edge_cases():
    assert progress.run_progress(99.0, [14.6, 1.0, 0.0]) == 0.0       # above the schedule
    assert progress.run_progress(1.0, [1.0]) == 0.0                   # no steps
    assert 0.5 <= progress.run_progress(1e-9, [14.6, 1.0, 0.0]) < 1.0


def test_model_progress_inverts_percent_to_sigma():
    def percent_to_sigma(p):  # a discrete-like schedule in ComfyUI's convention
        return 999999999.9 if p <= 0 else 0.0 if p >= 1 else math.exp(math.log(14.6) * (1 - p) + math.log(0.03) * p)
    for p in (0.01, 0.3, 0.5, 0.97):
        assert progress.model_progress(percent_to_sigma(p), percent_to_sigma) == pytest.approx(p, abs=1e-9)
    assert progress.model_progress(1e6, percent_to_sigma) < 1e-9
