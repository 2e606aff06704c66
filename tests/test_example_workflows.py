"""Every example workflow loads in ComfyUI: known node types, widget values that fit, consistent links."""
import glob
import json
import os

import pytest

from workflow_builder import all_specs, problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(p for p in glob.glob(os.path.join(ROOT, "example_workflows", "*.json"))
                   if os.path.basename(p) != "index.json")
SPECS = all_specs()


def test_there_are_example_workflows():
    assert WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_is_valid(path):
    with open(path) as handle:
        workflow = json.load(handle)
    assert workflow.get("version") == 0.4 and "nodes" in workflow and "links" in workflow
    assert problems(workflow, SPECS) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_holds_no_absolute_paths(path):
    text = open(path).read()
    assert "/home/" not in text and "/root/" not in text and ":\\\\" not in text and "/tmp/" not in text


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_uses_latent_lab(path):
    types = {n["type"] for n in json.load(open(path))["nodes"]}
    assert any(t.startswith("LatentLab") for t in types)


def test_problems_catches_broken_workflows():
    good = json.load(open(os.path.join(ROOT, "example_workflows", "latent_inspection.json")))
    broken = json.loads(json.dumps(good))
    broken["nodes"][0]["type"] = "NoSuchNode"
    broken["links"][0][5] = "IMAGE"
    ours = next(n for n in broken["nodes"] if n["type"] == "LatentLabChannelMaps")
    ours["widgets_values"][-1] = 999
    found = "\n".join(problems(broken, SPECS))
    assert "unknown type NoSuchNode" in found and "type IMAGE" in found and "outside" in found
