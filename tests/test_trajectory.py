"""Latent Trajectory: a run that blows up (non-finite predictions), a run nothing reached, recorders chained around a
correction; core/trajectory.py through the recorder patch and the nodes, over the sampling doubles."""
import json

import numpy as np
import pytest
import torch

import correct_doubles as comfy
from latent_lab.adapters import correction_patch as patch
from latent_lab.core import trajectory
from latent_lab.core.errors import LatentLabInputError
from latent_lab.nodes.common import LatentLabError
from latent_lab.core.formats import SDXL
from latent_lab.nodes import correct as nodes

STEPS = 6


def recorder(side=8):
    return trajectory.Trajectory(SDXL.rgb_affine(), SDXL.channel_names, side)


class BlowUp:
    """A post-CFG function that turns the predictions of chosen model calls non-finite (NaN, then +inf)."""

    def __init__(self, calls: set, item: int = 0):
        self.calls, self.item, self.count = calls, item, 0

    def __call__(self, args):
        denoised = args["denoised"]
        call, self.count = self.count, self.count + 1
        if call not in self.calls:
            return denoised
        broken = denoised.clone()
        broken[self.item, 1, :2] = float("nan") if call % 2 else float("inf")
        return broken


def blown_up_run(calls=frozenset({2, 3}), batch=2):
    model = comfy.ModelPatcher(comfy.SDXL)
    model.set_model_sampler_post_cfg_function(BlowUp(set(calls)))
    record = recorder()
    out = comfy.sample(patch.trajectory_model(model, record), torch.randn(batch, 4, 8, 8),
                       comfy.ModelSampling().normal_sigmas(STEPS))
    return record, out


def refuse_constant(constant):
    raise ValueError(f"{constant} is not JSON")


# ------------------------------------------------------------------------------------------------ non-finite runs

def test_a_non_finite_prediction_is_drawn_and_its_steps_marked():
    record, _ = blown_up_run()
    run = record.runs[-1]
    assert not np.isfinite(trajectory.series(run, 0)[1][2:4]).all()
    plot = trajectory.plots(run, SDXL.channel_names, boundary=4.0)
    assert plot.shape[0] == 2 and bool(torch.isfinite(plot).all()) and plot.std() > 0
    marker = torch.tensor(trajectory.NON_FINITE_MARK[:3]) / 255

    def marked_columns(image):
        hits = ((image - marker).abs() < 2 / 255).all(-1)
        return set(hits.any(0).nonzero().flatten().tolist())
    marked = marked_columns(plot[0])
    assert marked and not marked_columns(plot[1])  # item 1 stayed finite: nothing marked on its plot
    step_x = [trajectory.progress_x(p, plot.shape[2]) for p in (100 * 2 / STEPS, 100 * 3 / STEPS)]
    assert all(round(x) in marked for x in step_x)


def test_a_run_that_is_non_finite_from_the_start_still_draws():
    record, _ = blown_up_run(calls=set(range(STEPS)), batch=1)
    plot = trajectory.plots(record.runs[-1], SDXL.channel_names, boundary=4.0)
    assert plot.shape[0] == 1 and bool(torch.isfinite(plot).all())
    strip = trajectory.filmstrip(record.runs[-1], count=4, tile_width=32)
    assert 0 <= float(strip.min()) and float(strip.max()) <= 1


def test_the_viewer_node_reports_non_finite_calls_as_plain_json():
    model = comfy.ModelPatcher(comfy.SDXL)
    model.set_model_sampler_post_cfg_function(BlowUp({STEPS - 1}))
    model, record = nodes.LatentTrajectoryRecorder().record(model, 8, "run", "auto")
    out = comfy.sample(model, torch.randn(1, 4, 8, 8), comfy.ModelSampling().normal_sigmas(STEPS))
    result = nodes.LatentTrajectory().view(record, {"samples": out}, 4, 64, 4.0)
    report = json.loads(result["result"][2], parse_constant=refuse_constant)
    channel = report["items"][0]["channels"][1]
    assert channel["last"]["max"] in (None, "inf") and channel["last"]["mean"] is None
    assert report["items"][0]["non_finite_calls"] == 1
    assert "1 non-finite" in result["ui"]["text"][0]


# ------------------------------------------------------------------------------------------------ nothing recorded

def test_a_sampled_run_with_no_recorded_call_says_nothing_was_recorded():
    record = recorder()
    record.begin_run([14.6, 0.0])  # the run wrapper saw the run, the post-CFG hook saw no model call
    output = torch.randn(1, 4, 8, 8)
    record.end_run(output)
    with pytest.raises(LatentLabInputError, match="Nothing was recorded") as info:
        trajectory.recorded_run(record, output)
    assert "post-CFG" in str(info.value) and "sampler" in str(info.value)
    with pytest.raises(LatentLabError, match="Latent Trajectory: Nothing was recorded"):
        nodes.LatentTrajectory().view(record, {"samples": output}, 8, 128, 4.0)


def test_no_run_at_all_says_nothing_was_recorded_and_how_to_wire_it():
    with pytest.raises(LatentLabInputError, match="Nothing was recorded") as info:
        trajectory.recorded_run(recorder(), torch.zeros(1, 4, 8, 8))
    assert "Connect the recorder's MODEL output" in str(info.value)


# ------------------------------------------------------------------------------------------------ chained recorders

def test_recorders_around_a_correction_both_fill_their_own_records():
    """The trajectory template: recorder -> Latent Correction -> recorder -> sampler, a viewer on each record."""
    model, before = nodes.LatentTrajectoryRecorder().record(comfy.ModelPatcher(comfy.SDXL), 8, "run", "auto")
    model = nodes.LatentCorrection().patch(model, "custom", 1.0, "run", "center 0-100 channels=all global=1",
                                           "auto")["result"][0]
    model, after = nodes.LatentTrajectoryRecorder().record(model, 8, "run", "auto")
    out = comfy.sample(model, torch.randn(1, 4, 8, 8), comfy.ModelSampling().normal_sigmas(STEPS))
    reports = []
    for record in (before, after):
        result = nodes.LatentTrajectory().view(record, {"samples": out}, 4, 64, 4.0)
        reports.append(json.loads(result["result"][2]))
        assert reports[-1]["calls"] == STEPS and reports[-1]["matched_latent"]
    last_means = [[c["last"]["mean"] for c in r["items"][0]["channels"]] for r in reports]
    assert max(abs(m) for m in last_means[1]) < 1e-4 < max(abs(m) for m in last_means[0])


def test_a_recorder_keeps_recording_through_any_later_clone():
    record = recorder()
    model = patch.trajectory_model(comfy.ModelPatcher(), record).clone().clone()
    out = comfy.sample(model, torch.randn(1, 4, 8, 8), comfy.ModelSampling().normal_sigmas(STEPS))
    run, matched = record.find_run(out)
    assert matched and len(run.frames) == STEPS
