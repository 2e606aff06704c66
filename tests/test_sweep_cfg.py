"""Per-cell CFG in one batch, against separate single-cell runs, with an analytic denoiser in pure torch.

The denoiser is the exact x0 predictor for data ~ N(mu, s^2): D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2),
with one mean for the positive and one for the negative prompt.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from latent_lab.adapters.sweep_sampler import CellNoise
from latent_lab.core.sweep_cfg import (cfg_combine, cfg_scale, distinct_rows, guided_prediction, is_unit_scale,
                                       needs_uncond)

SHAPE = (4, 6, 5)
S2 = 0.5
FAST = settings(max_examples=40, deadline=None)


def means():
    g = torch.Generator().manual_seed(3)
    return torch.randn((1,) + SHAPE, generator=g), torch.randn((1,) + SHAPE, generator=g) * 0.5


MU_POS, MU_NEG = means()


def denoise(x, sigma, mu):
    s2 = sigma.view(-1, 1, 1, 1) ** 2
    return (S2 * x + s2 * mu) / (S2 + s2)


class CountingModel:
    def __init__(self):
        self.calls = []

    def evaluate(self, rows, step, with_uncond, cells=None):
        self.calls.append((len(rows), with_uncond))
        cond = denoise(rows, step, MU_POS)
        return cond, (denoise(rows, step, MU_NEG) if with_uncond else None)

    @property
    def rows(self):
        return sum(n * (2 if u else 1) for n, u in self.calls)


def separate(x1, sigma1, scale, skip_unit=True):
    """What ComfyUI's sampling_function does for one cell with a float scale."""
    cond = denoise(x1, sigma1, MU_POS)
    uncond = torch.zeros_like(cond) if skip_unit and math.isclose(scale, 1.0) else denoise(x1, sigma1, MU_NEG)
    return uncond + (cond - uncond) * scale


def batched(x, sigma, scales, groups, model=None, skip_unit=True, stats=None):
    model = model or CountingModel()
    return guided_prediction(x, sigma, scales, groups, model.evaluate,
                             lambda c, u, needs: cfg_combine(c, u, cfg_scale(scales, x)), skip_unit, stats)


scale_lists = st.lists(st.sampled_from([0.0, 1.0, 1.5, 3.0, 5.3, 7.5, 12.25, 30.0]), min_size=1, max_size=8)


@FAST
@given(scale_lists, st.floats(0.05, 20.0), st.integers(0, 1000))
def test_per_cell_combination_equals_separate_runs_exactly(scales, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(scales),) + SHAPE, generator=g) * sigma
    t = torch.full((len(scales),), sigma)
    out = batched(x, t, scales, list(range(len(scales))))
    for i, scale in enumerate(scales):
        assert torch.equal(out[i:i + 1], separate(x[i:i + 1], t[i:i + 1], scale))


@FAST
@given(st.lists(st.sampled_from([1.0, 2.5, 3.5, 6.0]), min_size=1, max_size=6), st.floats(0.05, 20.0))
def test_each_row_is_evaluated_with_its_cell_and_only_same_guidance_cells_share(guidances, sigma):
    # one seed: every row starts identical; a cell's guidance scales its positive prediction, as a guidance
    # embedding changes a guidance-distilled model's output
    x = (torch.randn((1,) + SHAPE, generator=torch.Generator().manual_seed(5)) * sigma).repeat(len(guidances), 1, 1, 1)
    t = torch.full((len(guidances),), sigma)
    scales = [1.0 + i for i in range(len(guidances))]
    evaluated = []

    def evaluate(rows, step, with_uncond, cells):
        evaluated.extend(cells.tolist())
        g = torch.tensor([guidances[i] for i in cells.tolist()]).view(-1, 1, 1, 1)
        return denoise(rows, step, MU_POS) * g, (denoise(rows, step, MU_NEG) if with_uncond else None)

    out = guided_prediction(x, t, scales, [(0, g) for g in guidances], evaluate,
                            lambda c, u, needs: cfg_combine(c, u, cfg_scale(scales, x)))
    assert sorted(guidances[i] for i in evaluated) == sorted(set(guidances))
    for i, (scale, g) in enumerate(zip(scales, guidances)):
        cond = denoise(x[i:i + 1], t[i:i + 1], MU_POS) * g
        uncond = torch.zeros_like(cond) if is_unit_scale(scale) else denoise(x[i:i + 1], t[i:i + 1], MU_NEG)
        assert torch.allclose(out[i:i + 1], cfg_combine(cond, uncond, scale), rtol=1e-6, atol=1e-6)


def test_identical_rows_of_a_group_are_evaluated_once():
    x1 = torch.randn((1,) + SHAPE) * 14
    x = x1.repeat(6, 1, 1, 1)
    t = torch.full((6,), 14.0)
    scales = [1.0, 4.0, 7.5, 1.0, 4.0, 7.5]
    model = CountingModel()
    out = batched(x, t, scales, [0, 0, 0, 1, 1, 1], model)
    # one row per group, with the negative pass because some cells of each group need it
    assert model.calls == [(2, True)]
    for i, scale in enumerate(scales):
        assert torch.equal(out[i:i + 1], separate(x1, t[:1], scale))


def test_rows_that_differ_are_not_shared_even_in_one_group():
    x = torch.randn((3,) + SHAPE)
    x[1] = x[0]
    x[2, 0, 0, 0] += 1e-6
    t = torch.full((3,), 2.0)
    reps, inverse = distinct_rows(x, t, [0, 0, 0])
    assert reps.tolist() == [0, 2] and inverse.tolist() == [0, 0, 1]
    t2 = t.clone()
    t2[1] = 3.0
    reps, _ = distinct_rows(x, t2, [0, 0, 0])
    assert reps.tolist() == [0, 1, 2]
    reps, _ = distinct_rows(x, t, [0, 1, 2])  # different groups are never compared
    assert reps.tolist() == [0, 1, 2]


def test_unit_scale_cells_skip_the_negative_pass():
    x = torch.randn((4,) + SHAPE)
    t = torch.full((4,), 1.0)
    model = CountingModel()
    seen = {}

    def combine(cond, uncond, needs):
        seen["uncond"], seen["needs"] = uncond, needs
        return cfg_combine(cond, uncond, cfg_scale([1.0, 5.0, 1.0, 5.0], x))

    guided_prediction(x, t, [1.0, 5.0, 1.0, 5.0], [0, 1, 2, 3], model.evaluate, combine)
    assert sorted(model.calls) == [(2, False), (2, True)]
    assert seen["needs"] == [False, True, False, True]
    assert torch.count_nonzero(seen["uncond"][[0, 2]]) == 0 and torch.count_nonzero(seen["uncond"][[1, 3]]) > 0

    model = CountingModel()
    batched(x, t, [1.0] * 4, [0, 1, 2, 3], model)
    assert model.calls == [(4, False)]

    model = CountingModel()
    out = batched(x, t, [1.0, 5.0, 1.0, 5.0], [0, 1, 2, 3], model, skip_unit=False)
    assert model.calls == [(4, True)]
    assert torch.equal(out[:1], separate(x[:1], t[:1], 1.0, skip_unit=False))


def test_a_unit_cell_sharing_a_row_still_gets_a_zero_negative():
    x = torch.randn((1,) + SHAPE).repeat(2, 1, 1, 1)
    t = torch.full((2,), 5.0)
    seen = {}

    def combine(cond, uncond, needs):
        seen["uncond"] = uncond
        return cfg_combine(cond, uncond, cfg_scale([1.0, 6.0], x))

    model = CountingModel()
    guided_prediction(x, t, [1.0, 6.0], [0, 0], model.evaluate, combine)
    assert model.calls == [(1, True)]
    assert torch.count_nonzero(seen["uncond"][0]) == 0 and torch.count_nonzero(seen["uncond"][1]) > 0


def test_scale_is_a_float_when_uniform_and_a_column_tensor_otherwise():
    like = torch.zeros((3,) + SHAPE)
    assert cfg_scale([7.5, 7.5, 7.5], like) == 7.5 and isinstance(cfg_scale([7.5] * 3, like), float)
    scale = cfg_scale([1.0, 2.0, 3.0], like)
    assert scale.shape == (3, 1, 1, 1) and scale.dtype == like.dtype and scale.flatten().tolist() == [1, 2, 3]
    assert is_unit_scale(1.0) and is_unit_scale(1.0 + 1e-12) and not is_unit_scale(1.001)
    assert needs_uncond([1.0, 2.0]) == [False, True] and needs_uncond([1.0], skip_unit=False) == [True]


# ---- whole sampling loops -------------------------------------------------------------------------------------

SIGMAS = torch.tensor([14.6, 7.0, 3.1, 1.2, 0.45, 0.1, 0.0])


def euler(predict, x, sigmas=SIGMAS):
    for i in range(len(sigmas) - 1):
        t = torch.full((x.shape[0],), float(sigmas[i]))
        d = (x - predict(x, t)) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def euler_ancestral(predict, x, noise_sampler, sigmas=SIGMAS):
    for i in range(len(sigmas) - 1):
        t = torch.full((x.shape[0],), float(sigmas[i]))
        denoised = predict(x, t)
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        up = min(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
        down = (s_next ** 2 - up ** 2) ** 0.5
        x = x + (x - denoised) / s * (down - s)
        if s_next > 0:
            x = x + noise_sampler(s, s_next) * up
    return x


def start_noise(seed):
    return torch.randn((1,) + SHAPE, generator=torch.Generator().manual_seed(seed))


def default_noise_sampler(seed):
    generator = torch.Generator().manual_seed(seed)
    return lambda s, s_next: torch.randn((1,) + SHAPE, generator=generator)


CFGS = [1.0, 4.0, 7.5]
SEEDS = [11, 12]


def sweep_cells():
    return [(seed, cfg) for seed in SEEDS for cfg in CFGS]


def test_euler_sweep_equals_separate_runs_and_shares_the_first_step():
    cells = sweep_cells()
    x = torch.cat([start_noise(seed) for seed, _ in cells]) * SIGMAS[0]
    model, stats = CountingModel(), {}
    scales, groups = [c for _, c in cells], [s for s, _ in cells]
    out = euler(lambda x, t: batched(x, t, scales, groups, model, stats=stats), x)
    for i, (seed, cfg) in enumerate(cells):
        reference = euler(lambda x, t: separate(x, t, cfg), start_noise(seed) * SIGMAS[0])
        assert (out[i:i + 1] - reference).abs().max() <= 1e-6
    steps = len(SIGMAS) - 1
    per_step_separate = sum(1 + (not math.isclose(c, 1.0)) for _, c in cells)
    assert stats["cell_evaluations"] == steps * per_step_separate
    # first step: one row per seed, with its negative pass; later steps: every cell on its own
    assert model.rows == 2 * len(SEEDS) + (steps - 1) * per_step_separate
    assert stats["cond_rows"] + stats["uncond_rows"] == model.rows


def test_chunked_sweep_equals_one_chunk():
    cells = sweep_cells()
    scales, groups = [c for _, c in cells], [s for s, _ in cells]
    x = torch.cat([start_noise(seed) for seed, _ in cells]) * SIGMAS[0]
    whole = euler(lambda x, t: batched(x, t, scales, groups), x)
    parts = [euler(lambda x, t, idx=idx: batched(x, t, [scales[i] for i in idx], [groups[i] for i in idx]), x[idx])
             for idx in ([0, 1], [2, 3, 4], [5])]
    assert torch.equal(torch.cat(parts), whole)


def test_ancestral_sweep_with_per_cell_noise_equals_separate_runs():
    cells = sweep_cells()
    scales, seeds = [c for _, c in cells], [s for s, _ in cells]
    x = torch.cat([start_noise(seed) for seed in seeds]) * SIGMAS[0]
    out = euler_ancestral(lambda x, t: batched(x, t, scales, seeds), x, CellNoise(x, seeds))
    for i, (seed, cfg) in enumerate(cells):
        reference = euler_ancestral(lambda x, t: separate(x, t, cfg), start_noise(seed) * SIGMAS[0],
                                    default_noise_sampler(seed))
        assert (out[i:i + 1] - reference).abs().max() <= 1e-6
    # one batch-wide generator would not match: the per-cell noise is what makes cells equal separate runs
    shared = torch.Generator().manual_seed(seeds[0])
    coupled = euler_ancestral(lambda x, t: batched(x, t, scales, seeds), x,
                              lambda s, n: torch.randn(x.shape, generator=shared))
    assert (coupled[3:] - out[3:]).abs().max() > 1e-3


def test_cell_noise_draws_batch_one_noise_per_seed():
    x = torch.zeros((3,) + SHAPE)
    noise = CellNoise(x, [5, 7, 5])
    first, second = noise(1.0, 0.5), noise(0.5, 0.1)
    reference = {s: default_noise_sampler(s) for s in (5, 7)}
    for seed_rows, seed in (([0, 2], 5), ([1], 7)):
        expected = [reference[seed](0, 0), reference[seed](0, 0)]
        for row in seed_rows:
            assert torch.equal(first[row:row + 1], expected[0]) and torch.equal(second[row:row + 1], expected[1])
    assert not torch.equal(first[0], first[1])


def test_nan_rows_are_never_shared():
    x = torch.full((2,) + SHAPE, float("nan"))
    reps, inverse = distinct_rows(x, torch.ones(2), [0, 0])
    assert reps.tolist() == [0, 1]


def test_inputs_are_not_modified():
    x = torch.randn((1,) + SHAPE).repeat(3, 1, 1, 1)
    t = torch.full((3,), 3.0)
    before, before_t = x.clone(), t.clone()
    batched(x, t, [1.0, 2.0, 3.0], [0, 0, 0])
    assert torch.equal(x, before) and torch.equal(t, before_t)


@pytest.mark.parametrize("scales", [[2.0, 2.0], [0.0, 9.0]])
def test_scalar_timestep_is_accepted(scales):
    x = torch.randn((2,) + SHAPE)
    t = torch.tensor(2.0)
    out = guided_prediction(x, t, scales, [0, 1], CountingModel().evaluate,
                            lambda c, u, needs: cfg_combine(c, u, cfg_scale(scales, x)))
    for i, scale in enumerate(scales):
        assert torch.equal(out[i:i + 1], separate(x[i:i + 1], t.view(1), scale))


# ---- patch guarding (adapter code that needs no ComfyUI) --------------------------------------------------------

def test_a_patch_that_needs_one_number_gets_a_message_naming_it():
    from latent_lab.adapters.sweep_sampler import PatchScaleError, guarded_options

    def compares_scale(args):
        return args["denoised"] * (2.0 if args["cond_scale"] > 3 else 1.0)

    def per_item(args):
        return args["denoised"] * args["cond_scale"]

    options = guarded_options({"sampler_post_cfg_function": [per_item, compares_scale], "other": 1})
    x = torch.randn((3,) + SHAPE)
    args = {"denoised": x, "cond_scale": cfg_scale([1.0, 4.0, 7.0], x), "input": x}
    assert torch.equal(options["sampler_post_cfg_function"][0](args), x * args["cond_scale"])
    with pytest.raises(PatchScaleError) as caught:
        options["sampler_post_cfg_function"][1](args)
    assert "compares_scale" in caught.value.problem and "post-CFG function" in caught.value.problem
    assert "Remove the patch" in caught.value.fix
    assert options["other"] == 1


def test_a_patch_that_drops_cells_is_caught_and_the_originals_are_untouched():
    from latent_lab.adapters.sweep_sampler import PatchScaleError, guarded_options

    def first_only(args):
        return args["cond"][:1]

    original = {"sampler_cfg_function": first_only}
    options = guarded_options(original)
    x = torch.randn((2,) + SHAPE)
    with pytest.raises(PatchScaleError, match="returned shape"):
        options["sampler_cfg_function"]({"cond": x, "input": x, "cond_scale": cfg_scale([2.0, 3.0], x)})
    assert original["sampler_cfg_function"] is first_only


def test_a_latent_lab_error_inside_a_patch_keeps_its_own_message():
    from latent_lab.adapters.sweep_sampler import guarded_options
    from latent_lab.core.errors import LatentLabInputError

    def refuses(args):
        raise LatentLabInputError("3 channel strengths for a 4-channel latent.", "Fix the schedule.")

    options = guarded_options({"sampler_post_cfg_function": [refuses]})
    x = torch.randn((2,) + SHAPE)
    with pytest.raises(LatentLabInputError) as caught:
        options["sampler_post_cfg_function"][0]({"denoised": x, "cond_scale": cfg_scale([2.0, 3.0], x), "input": x})
    assert caught.value.problem == "3 channel strengths for a 4-channel latent."


def test_a_pre_cfg_patch_may_return_no_uncond_when_no_cell_needs_one():
    from latent_lab.adapters.sweep_sampler import guarded_options

    def passes(args):
        return args["conds_out"]

    options = guarded_options({"sampler_pre_cfg_function": [passes]})
    x = torch.randn((2,) + SHAPE)
    out = options["sampler_pre_cfg_function"][0]({"conds_out": [x, None], "input": x,
                                                   "cond_scale": cfg_scale([1.0, 1.0], x)})
    assert out[0] is x and out[1] is None


def test_out_of_memory_is_not_blamed_on_the_scale():
    from latent_lab.adapters.sweep_sampler import guarded_options

    def runs_out(args):
        raise torch.OutOfMemoryError("no memory")

    options = guarded_options({"sampler_pre_cfg_function": [runs_out]})
    with pytest.raises(torch.OutOfMemoryError):
        options["sampler_pre_cfg_function"][0]({"input": torch.zeros(1)})


@FAST
@given(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=4), st.integers(1, 5), st.integers(0, 100))
def test_row_guidance_gives_positive_blocks_their_cells_values_and_leaves_the_rest(entries, cells, seed):
    from latent_lab.adapters.sweep_sampler import row_guidance
    g = torch.Generator().manual_seed(seed)
    current = torch.rand(len(entries) * cells, generator=g) * 10
    before = current.clone()
    values = torch.rand(cells, generator=g) * 10
    out = row_guidance(current, entries, values)
    assert torch.equal(current, before)  # the call's own tensor is not modified
    for block, entry in enumerate(entries):
        rows = slice(block * cells, (block + 1) * cells)
        assert torch.equal(out[rows], values if entry == 0 else before[rows])


def test_row_guidance_refuses_a_guidance_that_is_not_one_value_per_row():
    from latent_lab.adapters.sweep_sampler import row_guidance
    from latent_lab.core.errors import LatentLabInputError
    with pytest.raises(LatentLabInputError, match="guidance of shape \\(3,\\) for 4 rows"):
        row_guidance(torch.zeros(3), [0, 1], torch.ones(2))
    with pytest.raises(LatentLabInputError, match="guidance NoneType for 2 rows"):
        row_guidance(None, [0], torch.ones(2))
    assert row_guidance(None, [1], torch.ones(2)) is None  # negative-only calls keep what they have
