"""Finite latents anywhere in the float32 range, huge or tiny, give finite corrections or a refusal naming the range."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import correct_doubles as comfy
from latent_lab.adapters.correction_patch import CorrectionPatch
from latent_lab.core import correct_ops as ops, correct_schedule as schedules
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import FORMATS, SD3, SDXL
from latent_lab.nodes import correct as nodes

SETTINGS = settings(max_examples=80, deadline=None)
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAGNITUDES = [FLOAT32_MAX, 3e38, 3e37, 1e30, 40.0, 1.0, 1e-30, 1e-38, 1e-42, 1e-45]


@st.composite
def extreme_latents(draw, channels=st.sampled_from([4, 16])):
    """Finite float32 latents: any float32 values, or values of one magnitude (all huge, all subnormal...)."""
    shape = (draw(st.integers(1, 2)), draw(channels), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if draw(st.booleans()):
        elements = st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=32, allow_nan=False, allow_infinity=False)
        return torch.from_numpy(draw(arrays(np.float32, shape, elements=elements)))
    unit = draw(arrays(np.float32, shape, elements=st.floats(-1, 1, width=32)))
    if draw(st.booleans()):
        unit = np.where(unit < 0, np.float32(-1), np.float32(1)) * np.abs(unit).clip(0.5, 1)
    return (torch.from_numpy(unit).double() * draw(st.sampled_from(MAGNITUDES))).float()


def finite_or_range_refusal(call, x):
    """The result, when finite; None after a refusal that names the float range."""
    try:
        out = call(x)
    except ops.FloatRangeError as error:
        assert "float32 range (±3.4e+38)" in error.problem and torch.isfinite(x).all()
        return None
    assert torch.isfinite(out).all()
    return out


def operations(fmt):
    affine = ops.scaled_affine(fmt.rgb_affine(), fmt)
    count = fmt.channels
    return {
        "center": lambda x: ops.center(x, [1.0] * count, 1.0, fmt.shift),
        "center_partial": lambda x: ops.center(x, [0.5] * count, 0.3, strength=0.7),
        "soft_clamp_pixel": lambda x: ops.soft_clamp(x, 3.5, 4.0, "pixel", scale=fmt.scale, shift=fmt.shift),
        "soft_clamp_channel": lambda x: ops.soft_clamp(x, 0.0, 0.01, "channel", strength=0.5, scale=fmt.scale),
        "soft_clamp_relative": lambda x: ops.soft_clamp(x, 0.998, 0.998, relative=True, scale=fmt.scale,
                                                        shift=fmt.shift),
        "soft_clamp_relative_wide": lambda x: ops.soft_clamp(x, 0.5, 3.0, relative=True, scale=fmt.scale),
        "maximize": lambda x: ops.maximize(x, 4.0, [0, 1, 2], scale=fmt.scale, shift=fmt.shift),
        "maximize_tiny_boundary": lambda x: ops.maximize(x, 1e-6, list(range(count)), 0.5),
        "color_balance": lambda x: ops.color_balance(x, affine, None, [0, 1, 2]),
        "color_balance_target": lambda x: ops.color_balance(x, fmt.rgb_affine(), torch.tensor([0.2, 0.5, 0.9]),
                                                            list(range(count))),
    }


@pytest.mark.parametrize("name", list(operations(SDXL)))
@SETTINGS
@given(x=extreme_latents())
def test_every_operation_gives_finite_values_or_names_the_range(name, x):
    fmt = SDXL if x.shape[1] == 4 else SD3
    finite_or_range_refusal(operations(fmt)[name], x)


@pytest.mark.parametrize("magnitude", [3e37, 1e38, FLOAT32_MAX])
def test_a_latent_all_of_one_huge_value_centers_to_zero(magnitude):
    x = torch.full((2, 4, 8, 8), magnitude)
    torch.testing.assert_close(ops.center(x, [1.0] * 4, 1.0), torch.zeros_like(x))


def test_a_latent_all_3e37_is_balanced_to_finite_values():
    x = torch.full((2, 4, 8, 8), 3e37)
    assert torch.isfinite(ops.color_balance(x, SDXL.rgb_affine(), torch.tensor([0.5, 0.5, 0.5]), [0, 1, 2, 3])).all()


def test_a_correction_past_the_float32_range_is_refused_naming_the_range():
    x = torch.full((1, 4, 2, 2), FLOAT32_MAX)
    x[0, :, 0, 0] = -FLOAT32_MAX  # means 1.7e38: centering the negative values goes past -3.4e38
    with pytest.raises(ops.FloatRangeError, match=r"float32 range \(±3.4e\+38\): its values reach ±3.4e\+38"):
        ops.center(x, [1.0] * 4, 0.0)


def test_half_precision_latents_are_held_to_their_own_range():
    x = torch.full((1, 4, 2, 2), 60000.0, dtype=torch.float16)
    x[0, :, 0, 0] = -60000.0
    with pytest.raises(ops.FloatRangeError, match=r"float16 range \(±6.55e\+04\)"):
        ops.center(x, [1.0] * 4, 0.0)


@pytest.mark.parametrize("magnitude", [1e-45, 1e-40, 1e-30])
def test_tiny_latents_stay_finite_and_maximize_leaves_empty_items_alone(magnitude):
    x = torch.full((1, 4, 3, 3), magnitude)
    for name, call in operations(SDXL).items():
        assert torch.isfinite(call(x)).all(), name
    assert torch.equal(ops.maximize(x, 4.0, [0, 1, 2]), x)  # max|x| below MIN_PEAK


# ------------------------------------------------------------------------------------------------ nodes

NODE_CALLS = {
    "Latent Center": lambda l: nodes.LatentCenter().center(l, "sdxl", "auto", 1.0, 1.0)[0],
    "Latent Soft Clamp": lambda l: nodes.LatentSoftClamp().clamp(l, "sdxl", 3.5, 4.0, "pixel", 1.0)[0],
    "Latent Maximize": lambda l: nodes.LatentMaximize().maximize(l, "sdxl", "auto", 4.0, 1.0)[0],
    "Latent Color Balance": lambda l: nodes.LatentColorBalance().balance(l, "sdxl", "comfyui", "neutral", "auto",
                                                                         1.0)["result"][0],
}


@pytest.mark.parametrize("node", list(NODE_CALLS))
@SETTINGS
@given(x=extreme_latents(channels=st.just(4)))
def test_correction_nodes_give_finite_latents_or_a_refusal_naming_the_range(node, x):
    try:
        out = NODE_CALLS[node]({"samples": x})
    except LatentLabInputError as error:
        assert f"Latent Lab · {node}: Correcting this latent would carry values past the float32 range" in str(error)
        return
    assert torch.isfinite(out["samples"]).all()


@pytest.mark.parametrize("node", list(NODE_CALLS))
def test_the_known_all_3e37_latent_comes_out_finite(node):
    out = NODE_CALLS[node]({"samples": torch.full((1, 4, 8, 8), 3e37)})
    assert torch.isfinite(out["samples"]).all()


# ------------------------------------------------------------------------------------------------ sampling patch

EVERY_STEP = schedules.parse_schedule("""
soft_clamp    0-100% threshold=3.5 boundary=4
center        0-100% channel=0.8 global=0.8
maximize      0-100% boundary=4
color_balance 0-100% target=neutral
""")
SIGMAS = torch.tensor([14.6, 2.5, 0.0])


@SETTINGS
@given(x0=extreme_latents(channels=st.just(4)))
def test_the_patch_returns_finite_corrections_or_the_prediction_as_it_is(x0):
    patch = CorrectionPatch(schedules.compile_schedule(EVERY_STEP, SDXL))
    args = comfy.post_cfg_args(comfy.ModelPatcher(), x0, x0, x0, 5.0, SIGMAS[:1].expand(x0.shape[0]), x0,
                               {"transformer_options": {"sample_sigmas": SIGMAS}})
    out = patch(args)
    assert out is x0 or torch.isfinite(out).all()


def test_the_patch_passes_a_prediction_it_cannot_correct_within_float32_on_unchanged():
    x0 = torch.full((1, 4, 2, 2), FLOAT32_MAX)
    x0[0, :, 0, 0] = -FLOAT32_MAX
    patch = CorrectionPatch(schedules.compile_schedule(schedules.parse_schedule("center 0-100 global=0"), SDXL))
    args = comfy.post_cfg_args(comfy.ModelPatcher(), x0, x0, x0, 5.0, SIGMAS[:1], x0,
                               {"transformer_options": {"sample_sigmas": SIGMAS}})
    assert patch(args) is x0


@pytest.mark.parametrize("key", list(FORMATS))
def test_limits_beyond_any_latent_are_refused_before_work(key):
    with pytest.raises(LatentLabInputError, match="boundary <= 1e\\+06"):
        ops.soft_clamp(torch.zeros(1, FORMATS[key].channels, 2, 2), 3.5, 1e30)
    with pytest.raises(LatentLabInputError, match="at most 1e\\+06"):
        ops.maximize(torch.zeros(1, FORMATS[key].channels, 2, 2), 1e30, [0])
    with pytest.raises(LatentLabInputError, match="Operation 'maximize'.*at most 1e\\+06"):
        schedules.compile_schedule(schedules.parse_schedule("maximize 0-10 boundary=1e30 channels=0"), FORMATS[key])
