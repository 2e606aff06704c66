"""The sampling patches: correction and trajectory recording as post-CFG functions (adapters/correction_patch.py)."""
import pytest
import torch

import correct_doubles as comfy
from latent_lab.adapters import correction_patch as patch
from latent_lab.core import correct_ops as ops, correct_schedule as schedules, trajectory
from latent_lab.core.formats import SD15, SDXL

SCHEDULE = schedules.parse_schedule("""
soft_clamp 0-50% threshold=2 boundary=3
center 0-100% channels=all global=0
maximize 75-100% channels=0,1,2 boundary=4
""")


def steps(schedule=SCHEDULE, fmt=SDXL):
    return schedules.compile_schedule(schedule, fmt)


def call_args(denoised, sigma, sigmas, model=None):
    model_patcher = comfy.ModelPatcher()
    options = {"transformer_options": {"sample_sigmas": sigmas}}
    cond, uncond = denoised + 0.1, denoised - 0.1
    args = comfy.post_cfg_args(model_patcher, denoised, cond, uncond, 5.0, sigma, denoised * 3, options)
    if model is not None:
        args["model"] = model
    return args


SIGMAS = torch.tensor([14.6, 6.0, 2.5, 0.9, 0.0])


def test_patch_corrects_x0_by_the_window_of_the_current_step():
    x0 = torch.randn(2, 4, 6, 6) * 5 + 1
    before = x0.clone()
    fn = patch.CorrectionPatch(steps())
    early = fn(call_args(x0, SIGMAS[0].expand(2), SIGMAS))   # 0%: clamp then center
    late = fn(call_args(x0, SIGMAS[3].expand(2), SIGMAS))    # 75%: center then maximize
    assert torch.equal(x0, before)
    expected_early = ops.center(ops.soft_clamp(x0, 2, 3), [1.0] * 4, 0)
    torch.testing.assert_close(early, expected_early)
    torch.testing.assert_close(late, ops.maximize(ops.center(x0, [1.0] * 4, 0), 4.0, [0, 1, 2]))


def test_patch_with_zero_strength_returns_denoised_itself():
    x0 = torch.randn(1, 4, 4, 4) * 9
    assert patch.CorrectionPatch(steps(), strength=0.0)(call_args(x0, SIGMAS[:1], SIGMAS)) is x0
    zero = tuple(schedules.operation(op.kind, op.start, op.end, 0.0, **op.options) for op in SCHEDULE)
    assert patch.CorrectionPatch(steps(zero))(call_args(x0, SIGMAS[:1], SIGMAS)) is x0


def test_patch_leaves_a_non_finite_prediction_alone():
    x0 = torch.randn(1, 4, 4, 4)
    x0[0, 1, 2, 2] = float("nan")
    assert patch.CorrectionPatch(steps())(call_args(x0, SIGMAS[:1], SIGMAS)) is x0


def test_patch_outside_every_window_returns_denoised_itself_without_reading_it():
    late_only = steps(schedules.parse_schedule("center 90-100% channels=all"))
    x0 = torch.full((1, 4, 4, 4), float("nan"))  # never scanned: no operation is active at 0%
    assert patch.CorrectionPatch(late_only)(call_args(x0, SIGMAS[:1], SIGMAS)) is x0


def test_patch_corrects_each_batch_item_on_its_own():
    x0 = torch.randn(3, 4, 6, 6) * torch.tensor([1.0, 6.0, 12.0]).view(3, 1, 1, 1) + torch.tensor([0.0, 2.0, -3.0]).view(3, 1, 1, 1)
    fn = patch.CorrectionPatch(steps())
    together = fn(call_args(x0, SIGMAS[0].expand(3), SIGMAS))
    for item in range(3):
        alone = fn(call_args(x0[item:item + 1], SIGMAS[:1], SIGMAS))
        torch.testing.assert_close(together[item:item + 1], alone)


def test_items_at_different_sigmas_get_their_own_windows():
    x0 = torch.randn(2, 4, 5, 5) * 6
    fn = patch.CorrectionPatch(steps())
    out = fn(call_args(x0, torch.stack([SIGMAS[0], SIGMAS[2]]), SIGMAS))
    torch.testing.assert_close(out[0], fn(call_args(x0[:1], SIGMAS[:1], SIGMAS))[0])
    torch.testing.assert_close(out[1], fn(call_args(x0[1:], SIGMAS[2:3], SIGMAS))[0])


def test_run_timeline_reads_the_runs_own_sigmas_for_img2img():
    ms = comfy.ModelSampling()
    full = ms.normal_sigmas(20)
    tail = full[-11:]  # KSampler with denoise 0.5 keeps the last steps + 1 sigmas
    clock = patch.ProgressClock("run")
    _, percents = clock.percents(call_args(torch.zeros(1, 4, 2, 2), tail[:1], tail))
    assert percents == [0.0]
    model_clock = patch.ProgressClock("model")
    _, percents = model_clock.percents(call_args(torch.zeros(1, 4, 2, 2), tail[:1], tail))
    assert percents[0] == pytest.approx(50.0, abs=0.2)


def test_run_timeline_without_sample_sigmas_falls_back_to_the_model():
    ms = comfy.ModelSampling()
    sigma = torch.tensor([ms.percent_to_sigma(0.3)])
    args = call_args(torch.zeros(1, 4, 2, 2), sigma, None)
    args["model_options"] = {}
    _, percents = patch.ProgressClock("run").percents(args)
    assert percents[0] == pytest.approx(30.0, abs=1e-6)


def test_model_timeline_reproduces_the_blogs_timestep_conditions():
    ms = comfy.ModelSampling()
    clock = patch.ProgressClock("model")
    clamp, center_mid, center_late, _ = schedules.blog_schedule()
    for t in (999, 960, 951, 949, 800, 701, 699, 300, 99, 50, 2):
        _, (p,) = clock.percents(call_args(torch.zeros(1, 4, 2, 2), torch.tensor([ms.sigma(t)]), None))
        assert clamp.active(p) == (t > 950) and center_mid.active(p) == (t > 700) and center_late.active(p) == (1 < t < 100), t


# ------------------------------------------------------------------------------------------------ ComfyUI wiring

def test_correction_model_clones_and_appends_to_the_post_cfg_list():
    model = comfy.ModelPatcher()
    other = lambda args: args["denoised"]  # noqa: E731
    model.set_model_sampler_post_cfg_function(other)
    patched = patch.correction_model(model, steps(), 1.0)
    assert model.model_options["sampler_post_cfg_function"] == [other]
    chain = patched.model_options["sampler_post_cfg_function"]
    assert chain[0] is other and isinstance(chain[1], patch.CorrectionPatch)
    assert "sampler_cfg_function" not in patched.model_options


@pytest.mark.parametrize("correction_first", [True, False])
def test_patch_composes_with_another_post_cfg_function_in_order(correction_first):
    def brighten(args):
        return args["denoised"] * 1.5 + 0.25

    model = comfy.ModelPatcher()
    if correction_first:
        model = patch.correction_model(model, steps(), 1.0)
        model.set_model_sampler_post_cfg_function(brighten)
    else:
        model.set_model_sampler_post_cfg_function(brighten)
        model = patch.correction_model(model, steps(), 1.0)
    x0 = torch.randn(2, 4, 5, 5) * 4 + 1
    args = call_args(x0, SIGMAS[0].expand(2), SIGMAS)
    out = x0
    for fn in model.model_options["sampler_post_cfg_function"]:  # what comfy.samplers.cfg_function does
        out = fn({**args, "denoised": out})
    corrected = patch.CorrectionPatch(steps())
    if correction_first:
        expected = brighten({"denoised": corrected(args)})
    else:
        expected = corrected({**args, "denoised": brighten(args)})
    torch.testing.assert_close(out, expected)


def test_euler_sampling_uses_the_corrected_prediction():
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = comfy.ModelSampling().normal_sigmas(8)
    model = comfy.ModelPatcher()
    plain = comfy.sample(model, noise, sigmas)
    corrected = comfy.sample(patch.correction_model(model, steps(), 1.0), noise, sigmas)
    off = comfy.sample(patch.correction_model(model, steps(), 0.0), noise, sigmas)
    assert torch.equal(off, plain)
    assert (corrected - plain).abs().max() > 0.1
    # the last step's x0 is the output with Euler: the final centering shows in the result
    assert corrected.mean(dim=(2, 3)).abs().max() < 1e-4 < plain.mean(dim=(2, 3)).abs().max()


# ------------------------------------------------------------------------------------------------ trajectory

def recorder(fmt=SDXL, side=4):
    return trajectory.Trajectory(ops.scaled_affine(fmt.rgb_affine(), fmt), fmt.channel_names, side)


def test_trajectory_records_every_call_of_every_run():
    record = recorder()
    model = patch.trajectory_model(comfy.ModelPatcher(), record)
    sigmas = comfy.ModelSampling().normal_sigmas(6)
    noise = torch.randn(3, 4, 8, 8)
    first = comfy.sample(model, noise, sigmas)
    second = comfy.sample(model, noise * 0.5, sigmas)
    assert len(record.runs) == 2
    run, matched = record.find_run(first)
    assert matched and run is record.runs[0] and torch.equal(run.output, first)
    assert [f.percents[0] for f in run.frames] == pytest.approx([100 * i / 6 for i in range(6)])
    assert run.frames[0].stats.shape == (3, 4, 4) and run.frames[0].preview.shape == (3, 4, 4, 3)
    assert run.frames[0].preview.dtype == torch.uint8
    assert record.find_run(second) == (record.runs[1], True)
    assert record.find_run(torch.zeros(3, 4, 8, 8)) == (record.runs[1], False)


def test_trajectory_stats_are_those_of_the_prediction_it_saw():
    record = recorder(side=64)
    x0 = torch.randn(2, 4, 6, 6) * 3
    fn = patch.TrajectoryPatch(record)
    assert fn(call_args(x0, SIGMAS[1].expand(2), SIGMAS)) is x0
    frame = record.runs[-1].frames[0]
    torch.testing.assert_close(frame.stats[..., 0], x0.mean(dim=(2, 3)))
    torch.testing.assert_close(frame.stats[..., 1], x0.std(dim=(2, 3), correction=0))
    torch.testing.assert_close(frame.stats[..., 3], x0.amax(dim=(2, 3)))
    assert frame.percents == [25.0, 25.0] and frame.sigmas == pytest.approx([6.0, 6.0])


def test_recorder_after_correction_sees_corrected_predictions():
    before, after = recorder(), recorder()
    model = patch.trajectory_model(comfy.ModelPatcher(), before)
    model = patch.correction_model(model, steps(schedules.parse_schedule("center 0-100 channels=all global=0")), 1.0)
    model = patch.trajectory_model(model, after)
    comfy.sample(model, torch.randn(1, 4, 8, 8), comfy.ModelSampling().normal_sigmas(4))
    means_before = torch.stack([f.stats[..., 0] for f in before.runs[-1].frames])
    means_after = torch.stack([f.stats[..., 0] for f in after.runs[-1].frames])
    assert means_after.abs().max() < 1e-5 < means_before.abs().max()
    assert before.runs[-1].output is not None and after.runs[-1].output is not None


def test_filmstrip_and_plots_have_one_image_per_item():
    record = recorder(side=8)
    model = patch.trajectory_model(comfy.ModelPatcher(), record)
    comfy.sample(model, torch.randn(2, 4, 16, 12), comfy.ModelSampling().normal_sigmas(10))
    run = record.runs[-1]
    strip = trajectory.filmstrip(run, count=4, tile_width=48)
    assert strip.shape[0] == 2 and strip.shape[3] == 3 and strip.shape[2] > 4 * 48
    assert 0 <= strip.min() and strip.max() <= 1
    plot = trajectory.plots(run, SDXL.channel_names, boundary=4.0)
    assert plot.shape[0] == 2 and plot.shape[3] == 3 and plot.std() > 0
    report = trajectory.summary(run, SDXL.channel_names)
    assert report["calls"] == 10 and report["steps"] == 10 and len(report["items"]) == 2
    assert "10 model calls" in trajectory.summary_text(report, True)


def test_choose_frames_spreads_evenly_with_first_and_last():
    assert trajectory.choose_frames(3, 8) == [0, 1, 2]
    chosen = trajectory.choose_frames(100, 5)
    assert chosen[0] == 0 and chosen[-1] == 99 and len(chosen) == 5


def test_trajectory_keeps_only_the_last_runs():
    record = trajectory.Trajectory(ops.scaled_affine(SD15.rgb_affine(), SD15), SD15.channel_names, max_runs=2)
    for _ in range(4):
        record.begin_run([1.0, 0.0])
        record.record(torch.zeros(1, 4, 2, 2), [1.0], [0.0])
        record.end_run(torch.zeros(1, 4, 2, 2))
    assert len(record.runs) == 2
