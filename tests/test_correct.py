"""Channel corrections: center, soft clamp, maximize, color balance (core/correct_ops.py)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from correct_reference import lerp, mean_color
from latent_lab.core import correct_ops as ops
from latent_lab.core.errors import LatentLabInputError
from latent_lab.core.formats import FORMATS, SD15, SDXL

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def latents(draw, channels=st.sampled_from([4, 16]), batch=st.integers(1, 3), side=st.integers(1, 6),
            scale=st.sampled_from([0.5, 3.0, 12.0, 40.0])):
    shape = (draw(batch), draw(channels), draw(side), draw(side))
    values = draw(arrays(np.float32, shape, elements=st.floats(-1, 1, width=32)))
    return torch.from_numpy(values) * draw(scale)


def channel_subsets(count):
    return st.lists(st.integers(0, count - 1), min_size=1, max_size=count, unique=True)


# ------------------------------------------------------------------------------------------------ center

@SETTINGS
@given(latents(), st.floats(0, 1))
def test_full_center_zeroes_every_channel_mean_of_every_item(x, global_strength):
    out = ops.center(x, [1.0] * x.shape[1], global_strength)
    tolerance = 1e-5 * (1 + x.abs().max().item())
    assert out.mean(dim=(2, 3)).abs().max().item() <= tolerance


@SETTINGS
@given(latents(channels=st.just(4)), st.data())
def test_center_leaves_unchosen_channels_alone_without_global_shift(x, data):
    chosen = data.draw(channel_subsets(4))
    strengths = [1.0 if c in chosen else 0.0 for c in range(4)]
    out = ops.center(x, strengths, 0.0)
    for c in range(4):
        if c not in chosen:
            assert torch.equal(out[:, c], x[:, c])


def test_center_partial_strength_subtracts_that_share_of_the_mean():
    x = torch.randn(2, 4, 5, 5) + torch.tensor([1.0, -2.0, 3.0, 0.5]).view(1, 4, 1, 1)
    out = ops.center(x, [0.5, 0.0, 0.25, 1.0], 0.0)
    expected = x.mean(dim=(2, 3)) * torch.tensor([0.5, 1.0, 0.75, 0.0])
    torch.testing.assert_close(out.mean(dim=(2, 3)), expected, atol=1e-5, rtol=1e-5)


def test_center_global_strength_removes_the_item_mean_after_channel_centering():
    x = torch.randn(3, 4, 6, 6) + 2.0
    out = ops.center(x, [0.0] * 4, 1.0)
    assert out.mean(dim=(1, 2, 3)).abs().max() < 1e-5
    torch.testing.assert_close(out - x, (out - x)[:, :1, :1, :1].expand_as(x))  # one shift per item


# ------------------------------------------------------------------------------------------------ soft clamp

clamp_limits = st.tuples(st.floats(0, 6), st.floats(0.05, 4)).map(lambda tb: (tb[0], tb[0] + tb[1]))



@SETTINGS
@given(latents(channels=st.just(4)), clamp_limits, st.sampled_from(ops.CLAMP_MODES))
def test_soft_clamp_stays_within_the_boundary(x, limits, mode):
    threshold, boundary = limits
    out = ops.soft_clamp(x, threshold, boundary, mode)
    assert out.abs().max().item() <= boundary * (1 + 1e-5) + 1e-6


@SETTINGS
@given(latents(channels=st.just(4)), clamp_limits, st.sampled_from(ops.CLAMP_MODES))
def test_soft_clamp_is_identity_inside_the_threshold_and_never_pushes_outward(x, limits, mode):
    threshold, boundary = limits
    out = ops.soft_clamp(x, threshold, boundary, mode)
    inside = x.abs() <= threshold
    assert torch.equal(out[inside], x[inside])
    assert (out.abs() <= x.abs() + 1e-5).all()
    assert (torch.sign(out) == torch.sign(x)).all()


@SETTINGS
@given(latents(channels=st.just(4)), clamp_limits)
def test_soft_clamp_per_channel_is_monotone_within_each_channel(x, limits):
    out = ops.soft_clamp(x, *limits, mode="channel")
    for item in range(x.shape[0]):
        for c in range(4):
            order = torch.argsort(x[item, c].flatten(), stable=True)
            values = out[item, c].flatten()[order]
            assert (values[1:] >= values[:-1] - 1e-5).all()


@SETTINGS
@given(latents(channels=st.just(4)), clamp_limits)
def test_soft_clamp_per_pixel_keeps_the_order_of_channels_at_each_pixel(x, limits):
    out = ops.soft_clamp(x, *limits, mode="pixel")
    order = torch.argsort(x, dim=1, stable=True)
    values = torch.gather(out, 1, order)
    assert (values[:, 1:] >= values[:, :-1] - 1e-5).all()


def blog_soft_clamp(x: np.ndarray, t: float, b: float, mode: str) -> np.ndarray:
    """The blog's per-value formula written plainly, value by value, with the early exit at the boundary."""
    out = x.astype(np.float64).copy()
    for item in range(x.shape[0]):
        values = x[item].astype(np.float64)
        if np.abs(values).max() <= b:
            continue
        for index in np.ndindex(values.shape):
            v = values[index]
            if abs(v) <= t:
                continue
            group = values[(slice(None),) + index[1:]] if mode == "pixel" else values[index[0]]
            reach = max(group.max() if v > 0 else -group.min(), b)
            out[(item,) + index] = np.sign(v) * (t + (abs(v) - t) * (b - t) / (reach - t))
    return out


@SETTINGS
@given(latents(channels=st.just(4)), clamp_limits, st.sampled_from(ops.CLAMP_MODES))
def test_soft_clamp_equals_the_blog_formula_value_by_value(x, limits, mode):
    threshold, boundary = limits
    expected = blog_soft_clamp(x.numpy(), threshold, boundary, mode)
    out = ops.soft_clamp(x, threshold, boundary, mode)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_soft_clamp_maps_the_largest_value_to_the_boundary_like_the_blog():
    x = torch.tensor([3.0, 5.0, 8.0, -10.0]).view(1, 4, 1, 1)
    out = ops.soft_clamp(x, 3.5, 4.0, "pixel")
    # the blog: (x - t) / (M - t) * (b - t) + t with M the pixel's channel max (8); min side symmetric (-10)
    expected = torch.tensor([3.0, (5 - 3.5) / (8 - 3.5) * 0.5 + 3.5, 4.0, -4.0]).view(1, 4, 1, 1)
    torch.testing.assert_close(out, expected)


def test_soft_clamp_early_exit_follows_the_boundary_not_a_fixed_4():
    x = torch.full((1, 4, 2, 2), 5.0)
    x[0, 0, 0, 0] = 5.5
    untouched = ops.soft_clamp(x, 3.0, 6.0)  # max 5.5 < boundary 6: the blog clamps (> 4)
    assert torch.equal(untouched, x)
    clamped = ops.soft_clamp(x, 1.0, 2.0)
    assert clamped.abs().max() <= 2.0 + 1e-6


def test_soft_clamp_items_are_exited_one_by_one():
    inside = torch.full((1, 4, 3, 3), 3.9)
    outside = torch.full((1, 4, 3, 3), 3.9)
    outside[0, 2, 1, 1] = 9.0
    out = ops.soft_clamp(torch.cat([inside, outside]), 3.5, 4.0)
    assert torch.equal(out[0], inside[0])
    assert out[1].abs().max() <= 4.0 + 1e-6


def test_relative_soft_clamp_pulls_the_peak_to_the_fraction():
    x = torch.randn(3, 4, 8, 8) * torch.tensor([1.0, 5.0, 20.0]).view(3, 1, 1, 1)
    out = ops.soft_clamp(x, 0.998, 0.998, relative=True)
    torch.testing.assert_close(out.abs().amax(dim=(1, 2, 3)), 0.998 * x.abs().amax(dim=(1, 2, 3)))


def blog_soft_clamp_in_units(raw, threshold, boundary, mode, relative, strength, scale, shift):
    """The blog formula applied item by item in scaled units (relative limits from each item's max|x|), blended
    by strength, back in raw units; and where it leaves the value as it is."""
    scaled = ((raw.double() - shift) * scale).numpy()
    out, kept = scaled.copy(), np.ones(scaled.shape, dtype=bool)
    for item in range(scaled.shape[0]):
        b = np.abs(scaled[item]).max() * boundary if relative else boundary
        t = b * threshold if relative else threshold
        clamped = blog_soft_clamp(scaled[item:item + 1], t, b, mode)[0]
        out[item] = scaled[item] + (clamped - scaled[item]) * strength
        kept[item] = (clamped == scaled[item]) | (strength == 0)
    return torch.from_numpy(out / scale + shift), torch.from_numpy(kept)


@SETTINGS
@given(latents(channels=st.just(4)), clamp_limits, st.sampled_from(ops.CLAMP_MODES), st.booleans(), st.floats(0, 1),
       st.sampled_from([(1.0, 0.0), (0.13025, 0.0), (1.5305, -0.0609)]))
def test_soft_clamp_in_raw_units_with_relative_limits_and_strength_is_the_blended_blog_formula(
        x, limits, mode, relative, strength, units):
    threshold, boundary = (limits[0] / (limits[1] + 6), 0.5 + limits[1] / 8) if relative else limits
    scale, shift = units
    raw = x / scale + shift
    out = ops.soft_clamp(raw, threshold, boundary, mode, relative, strength, scale, shift)
    expected, kept = blog_soft_clamp_in_units(raw, threshold, boundary, mode, relative, strength, scale, shift)
    tolerance = 1e-5 * (1 + raw.abs().max().item())
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=tolerance)
    assert torch.equal(out[kept], raw[kept])


@pytest.mark.parametrize("mode", ops.CLAMP_MODES)
def test_soft_clamp_with_limits_one_float32_apart_stays_finite(mode):
    x = torch.randn(2, 4, 6, 6) * 3
    out = ops.soft_clamp(x, 3.9999999, 4.0, mode)  # threshold and boundary: the same float32
    assert torch.isfinite(out).all() and out.abs().max() <= 4.0 + 1e-6


@pytest.mark.parametrize("call", [
    lambda x, s: ops.center(x, [1.0] * 4, 1.0, strength=s),
    lambda x, s: ops.center(x, [1.0] * 4, s),
    lambda x, s: ops.center(x, [s] * 4, 1.0),
    lambda x, s: ops.soft_clamp(x, 1.0, 2.0, strength=s),
    lambda x, s: ops.maximize(x, 4.0, [0, 1, 2], s),
    lambda x, s: ops.color_balance(x, SDXL.rgb_affine(), None, [0, 1, 2], s),
])
@pytest.mark.parametrize("strength", [float("nan"), -0.5, 1.5])
def test_strengths_outside_0_to_1_are_refused(call, strength):
    with pytest.raises(LatentLabInputError, match="outside 0..1"):
        call(torch.randn(1, 4, 4, 4), strength)


@pytest.mark.parametrize("threshold, boundary", [(4.0, 4.0), (5.0, 4.0), (-1.0, 4.0), (float("nan"), 4.0)])
def test_soft_clamp_refuses_threshold_not_below_boundary(threshold, boundary):
    with pytest.raises(LatentLabInputError, match="threshold"):
        ops.soft_clamp(torch.zeros(1, 4, 2, 2), threshold, boundary)


# ------------------------------------------------------------------------------------------------ maximize

@SETTINGS
@given(latents(), st.floats(0.5, 10), st.data())
def test_maximize_brings_the_chosen_channels_to_the_boundary(x, boundary, data):
    chosen = data.draw(channel_subsets(x.shape[1]))
    out = ops.maximize(x, boundary, chosen)
    for item in range(x.shape[0]):
        peak = x[item, chosen].abs().max().item()
        reached = out[item, chosen].abs().max().item()
        if peak > ops.MIN_PEAK:
            assert reached == pytest.approx(boundary, rel=1e-5)
        else:
            assert torch.equal(out[item], x[item])
    others = [c for c in range(x.shape[1]) if c not in chosen]
    assert torch.equal(out[:, others], x[:, others])


def test_maximize_keeps_ratios_between_chosen_channels():
    x = torch.randn(2, 4, 6, 6)
    out = ops.maximize(x, 4.0, [0, 1, 2])
    ratio = out[:, :3] / x[:, :3]
    torch.testing.assert_close(ratio, ratio[:, :1, :1, :1].expand_as(ratio))


# ------------------------------------------------------------------------------------------------ color balance

@pytest.mark.parametrize("key", list(FORMATS))
@SETTINGS
@given(x=latents(channels=st.just(4), scale=st.sampled_from([1.0, 4.0])), target=st.tuples(*[st.floats(0, 1)] * 3))
def test_color_balance_reaches_the_target_mean_color(key, x, target):
    fmt = FORMATS[key]
    x = x.repeat(1, fmt.channels // 4, 1, 1)
    affine = ops.scaled_affine(fmt.rgb_affine(), fmt)
    channels = list(range(fmt.channels))
    out = ops.color_balance(x, affine, torch.tensor(target), channels)
    error = (mean_color(out, affine) - torch.tensor(target)).abs().max().item()
    assert error <= 1e-3


@pytest.mark.parametrize("fmt, channels", [(SDXL, [0, 1, 2]), (SD15, [0, 1, 2, 3]), (SDXL, [0, 1, 2, 3])])
def test_neutral_balance_makes_the_mean_gray_at_the_same_brightness(fmt, channels):
    x = torch.randn(3, 4, 8, 8) + torch.tensor([0.5, -1.0, 0.8, 0.2]).view(1, 4, 1, 1)
    affine = ops.scaled_affine(fmt.rgb_affine(), fmt)
    before = mean_color(x, affine)
    out = ops.color_balance(x, affine, None, channels)
    after = mean_color(out, affine)
    luma = torch.tensor(ops.REC709_LUMA)
    torch.testing.assert_close(after, (before @ luma)[:, None].expand(-1, 3), atol=1e-3, rtol=0)
    unchosen = [c for c in range(4) if c not in channels]
    assert torch.equal(out[:, unchosen], x[:, unchosen])
    shift = out - x
    torch.testing.assert_close(shift, shift[:, :, :1, :1].expand_as(shift))  # one offset per item and channel


def test_color_balance_refuses_factors_made_for_another_channel_count():
    with pytest.raises(LatentLabInputError, match="16 channels but the factors"):
        ops.color_balance(torch.randn(1, 16, 4, 4), SDXL.rgb_affine(), None, [0, 1, 2])


def test_color_balance_in_raw_units_matches_scaled_units():
    fmt = SDXL
    raw = torch.randn(2, 4, 6, 6) * 6
    scaled = fmt.to_scaled(raw)
    target = ops.parse_color("#806040")
    via_raw = ops.color_balance(raw, fmt.rgb_affine(), target, [0, 1, 2])
    via_scaled = ops.color_balance(scaled, ops.scaled_affine(fmt.rgb_affine(), fmt), target, [0, 1, 2])
    torch.testing.assert_close(fmt.to_scaled(via_raw), via_scaled, atol=1e-4, rtol=1e-4)


def test_scaled_affine_gives_the_same_colors_for_shifted_formats():
    fmt = FORMATS["flux"]
    raw = torch.randn(2, 16, 4, 4)
    a = mean_color(raw, fmt.rgb_affine())
    b = mean_color(fmt.to_scaled(raw), ops.scaled_affine(fmt.rgb_affine(), fmt))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_color_balance_with_two_channels_is_the_least_squares_best_fit():
    fmt = SDXL
    affine = ops.scaled_affine(fmt.rgb_affine(), fmt)
    x = torch.randn(1, 4, 4, 4)
    target = torch.tensor([0.2, 0.7, 0.4])
    out = ops.color_balance(x, affine, target, [1, 2])
    residual = (mean_color(out, affine) - target).norm()
    for delta in (torch.tensor([0.05, 0.0]), torch.tensor([0.0, -0.05]), torch.tensor([0.03, 0.03])):
        moved = out.clone()
        moved[:, 1:3] += delta.view(1, 2, 1, 1)
        assert (mean_color(moved, affine) - target).norm() >= residual - 1e-6


@pytest.mark.parametrize("text, expected", [("neutral", None), ("#808080", [128 / 255] * 3), ("FF0000", [1.0, 0, 0])])
def test_parse_color(text, expected):
    value = ops.parse_color(text)
    assert value is None if expected is None else torch.allclose(value, torch.tensor(expected))


@pytest.mark.parametrize("text", ["#80808", "red", "#gg0000", "#8080801"])
def test_parse_color_refuses_what_it_cannot_read(text):
    with pytest.raises(LatentLabInputError, match="hex color"):
        ops.parse_color(text)


# ------------------------------------------------------------------------------------------------ shared properties

def _operations(fmt):
    affine = ops.scaled_affine(fmt.rgb_affine(), fmt)
    return {
        "center": lambda x: ops.center(x, [1.0, 0.5, 1.0, 0.0], 0.7),
        "soft_clamp_pixel": lambda x: ops.soft_clamp(x, 1.5, 2.0, "pixel"),
        "soft_clamp_channel": lambda x: ops.soft_clamp(x, 1.5, 2.0, "channel"),
        "soft_clamp_relative": lambda x: ops.soft_clamp(x, 0.9, 0.95, relative=True),
        "maximize": lambda x: ops.maximize(x, 4.0, [0, 1, 2]),
        "color_balance": lambda x: ops.color_balance(x, affine, None, [0, 1, 2]),
    }


OPERATION_NAMES = list(_operations(SDXL))


@pytest.mark.parametrize("name", OPERATION_NAMES)
@settings(max_examples=25, deadline=None)
@given(x=latents(channels=st.just(4), batch=st.integers(2, 3), scale=st.sampled_from([1.0, 3.0])))
def test_batch_items_are_corrected_independently(name, x):
    op = _operations(SDXL)[name]
    together = op(x)
    for item in range(x.shape[0]):
        torch.testing.assert_close(together[item:item + 1], op(x[item:item + 1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", OPERATION_NAMES)
def test_changing_one_item_leaves_the_others_results_alone(name):
    op = _operations(SDXL)[name]
    x = torch.randn(3, 4, 6, 6) * 2
    other = x.clone()
    other[1] = torch.randn(4, 6, 6) * 7 + 3
    a, b = op(x), op(other)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], b[1])


@pytest.mark.parametrize("name", OPERATION_NAMES)
def test_inputs_are_never_changed(name):
    x = torch.randn(2, 4, 5, 5) * 3
    before = x.clone()
    out = _operations(SDXL)[name](x)
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", OPERATION_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_latents_keep_their_dtype(name, dtype):
    x = (torch.randn(2, 4, 5, 5) * 3).to(dtype)
    out = _operations(SDXL)[name](x)
    assert out.dtype == dtype and out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", OPERATION_NAMES)
def test_video_shaped_latents_reduce_over_every_cell(name):
    x = torch.randn(2, 4, 3, 5, 5) * 3
    out = _operations(SDXL)[name](x)
    flat = _operations(SDXL)[name](x.reshape(2, 4, 15, 5))
    torch.testing.assert_close(out.reshape(2, 4, 15, 5), flat)


def test_lerp_endpoints_are_exact():
    x, y = torch.randn(3), torch.randn(3)
    assert lerp(x, y, 0) is x and lerp(x, y, 1) is y
    torch.testing.assert_close(lerp(x, y, 0.25), x + (y - x) * 0.25)


# ------------------------------------------------------------------------------------------------ units and strength

def _unit_operations(scale, shift, strength):
    return {
        "center": lambda x, scale=1.0, shift=0.0: ops.center(x, [strength, 0.5 * strength, strength, 0.0],
                                                             0.7 * strength, shift),  # center needs no scale
        "soft_clamp_pixel": lambda x, **u: ops.soft_clamp(x, 1.5, 2.0, "pixel", strength=strength, **u),
        "soft_clamp_channel": lambda x, **u: ops.soft_clamp(x, 1.5, 2.0, "channel", strength=strength, **u),
        "soft_clamp_relative": lambda x, **u: ops.soft_clamp(x, 0.9, 0.95, relative=True, strength=strength, **u),
        "maximize": lambda x, **u: ops.maximize(x, 4.0, [0, 1, 2], strength, **u),
    }


@pytest.mark.parametrize("name", list(_unit_operations(1, 0, 1)))
@pytest.mark.parametrize("scale, shift", [(0.13025, 0.0), (1.5305, 0.0609), (0.3611, 0.1159)])
def test_operations_on_raw_values_match_the_scaled_result(name, scale, shift):
    raw = torch.randn(2, 4, 6, 6) * (2.5 / scale) + shift + 0.3
    op = _unit_operations(scale, shift, 0.8)[name]
    via_raw = op(raw, scale=scale, shift=shift)
    via_scaled = op((raw - shift) * scale) / scale + shift
    torch.testing.assert_close(via_raw, via_scaled, atol=1e-4 / scale, rtol=1e-5)


@pytest.mark.parametrize("name", ["soft_clamp_pixel", "soft_clamp_channel", "soft_clamp_relative", "maximize"])
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_strength_blends_between_input_and_full_correction(name, strength):
    x = torch.randn(2, 4, 6, 6) * 3
    partial = _unit_operations(1, 0, strength)[name](x)
    full = _unit_operations(1, 0, 1.0)[name](x)
    torch.testing.assert_close(partial, lerp(x, full, strength), atol=1e-5, rtol=1e-5)
    if strength == 0:
        assert torch.equal(partial, x)


def test_color_balance_strength_scales_the_offsets():
    affine = ops.scaled_affine(SD15.rgb_affine(), SD15)
    x = torch.randn(2, 4, 6, 6) + 1
    full = ops.color_balance(x, affine, None, [0, 1, 2, 3])
    torch.testing.assert_close(ops.color_balance(x, affine, None, [0, 1, 2, 3], 0.25), lerp(x, full, 0.25))
    assert torch.equal(ops.color_balance(x, affine, None, [0, 1, 2, 3], 0.0), x)


def test_soft_clamp_copies_unmoved_values_bit_for_bit_in_raw_units():
    scale, shift = 1.5305, 0.0609
    raw = torch.randn(3, 4, 8, 8) * 2
    out = ops.soft_clamp(raw, 2.5, 3.0, "pixel", scale=scale, shift=shift)
    unmoved = ((raw - shift) * scale).abs() <= 2.5
    assert torch.equal(out[unmoved], raw[unmoved]) and not torch.equal(out, raw)


@pytest.mark.parametrize("name", ["soft_clamp_pixel", "soft_clamp_channel", "soft_clamp_relative", "maximize"])
def test_operations_accept_tensors_that_require_grad(name):
    # some ComfyUI samplers (uni_pc) hand the post-CFG hook an x0 that is part of an autograd graph
    x = (torch.randn(2, 4, 6, 6) * 3).requires_grad_()
    out = _unit_operations(1, 0, 1.0)[name](x * 1)
    torch.testing.assert_close(out.detach(), _unit_operations(1, 0, 1.0)[name](x.detach()))
