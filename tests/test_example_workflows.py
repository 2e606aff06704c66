"""Every example workflow loads in ComfyUI: known node types, widget values that fit, consistent links; and the
gallery around them: a readable file name (the template browser's title), a README gallery row (description)
and a thumbnail .jpg per workflow."""
import glob
import json
import os
import re
import sys

import pytest
from PIL import Image

from workflow_builder import CORE, all_specs, problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))
INSPECTION = os.path.join(ROOT, "example_workflows", "Inspect a latent (SD1.5).json")
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
    good = json.load(open(INSPECTION))
    broken = json.loads(json.dumps(good))
    broken["nodes"][0]["type"] = "NoSuchNode"
    broken["links"][0][5] = "IMAGE"
    ours = next(n for n in broken["nodes"] if n["type"] == "LatentLabChannelMaps")
    ours["widgets_values"][3] = 999  # tile_scale, max 16
    found = "\n".join(problems(broken, SPECS))
    assert "unknown type NoSuchNode" in found and "type IMAGE" in found and "outside" in found


def gallery_rows() -> dict:
    """README's "Example workflows" table: title (bold) -> the row's text."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("\n## Example workflows", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        for title in re.findall(r"\*\*([^*]+)\*\*", line) if line.startswith("|") else []:
            rows[title] = line
    return rows


def structure_problems(workflow: dict) -> list[str]:
    """What problems() takes for granted: unique ids, slots that exist, link lists that agree, last ids."""
    found = []
    ids = [n["id"] for n in workflow["nodes"]]
    link_ids = [l[0] for l in workflow["links"]]
    if len(set(ids)) != len(ids):
        found.append("node ids repeat")
    if len(set(link_ids)) != len(link_ids):
        found.append("link ids repeat")
    if ids and workflow.get("last_node_id", 0) < max(ids):
        found.append("last_node_id is below a node id")
    if link_ids and workflow.get("last_link_id", 0) < max(link_ids):
        found.append("last_link_id is below a link id")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, _ in workflow["links"]:
        if src in nodes and not 0 <= src_slot < len(nodes[src].get("outputs", [])):
            found.append(f"link {link_id}: node {src} has no output slot {src_slot}")
        if dst in nodes and not 0 <= dst_slot < len(nodes[dst].get("inputs", [])):
            found.append(f"link {link_id}: node {dst} has no input slot {dst_slot}")
    known = set(link_ids)
    for node in workflow["nodes"]:
        for output in node.get("outputs", []):
            for link_id in output.get("links") or []:
                if link_id not in known:
                    found.append(f"node {node['id']} output {output['name']} lists missing link {link_id}")
        for inp in node.get("inputs", []):
            if inp.get("link") is not None and inp["link"] not in known:
                found.append(f"node {node['id']} input {inp['name']} names missing link {inp['link']}")
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_structure_is_consistent(path):
    with open(path) as handle:
        workflow = json.load(handle)
    assert structure_problems(workflow) == []


def test_structure_problems_catches_broken_links():
    good = json.load(open(INSPECTION))
    broken = json.loads(json.dumps(good))
    broken["links"][0][2] = 99
    broken["nodes"][1]["id"] = broken["nodes"][0]["id"]
    broken["nodes"][-1]["outputs"] = [{"name": "x", "type": "IMAGE", "links": [12345], "slot_index": 0}]
    found = "\n".join(structure_problems(broken))
    assert "no output slot 99" in found and "node ids repeat" in found and "missing link 12345" in found


def test_no_index_json_is_shipped():
    # No ComfyUI frontend reads one: each lists it as one more template called "index".
    assert not os.path.exists(os.path.join(ROOT, "example_workflows", "index.json"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_name_reads_as_a_title(path):
    name = os.path.splitext(os.path.basename(path))[0]
    assert re.fullmatch(r"[A-Z][A-Za-z0-9 .,()-]{8,70}", name), f"{name!r}: the template browser shows it as the title"
    assert "_" not in name, "the template browser turns _ into spaces in descriptions only: use spaces"


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_has_a_gallery_row_and_a_thumbnail(path):
    name = os.path.splitext(os.path.basename(path))[0]
    row = gallery_rows().get(name)
    assert row, f"README's Example workflows table has no row for **{name}**"
    described = row.replace(f"**{name}**", "")
    assert len(re.sub(r"!\[[^]]*\]\([^)]*\)|<img[^>]*>|[|\s]", "", described)) >= 40, f"{name}: no description"
    thumbnail = os.path.join(ROOT, "example_workflows", f"{name}.jpg")
    assert os.path.isfile(thumbnail), f"{name}.jpg missing: run python3 tools/make_thumbnails.py"
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.size[0] >= 256 and image.size[1] >= 192, name


def test_thumbnails_belong_to_workflows():
    names = {os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS}
    pictures = {os.path.splitext(os.path.basename(p))[0]
                for p in glob.glob(os.path.join(ROOT, "example_workflows", "*.jpg"))}
    assert pictures == names


def test_thumbnail_script_renders_every_kind_of_picture():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import make_thumbnails
    assert make_thumbnails.workflow_names() == sorted(os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS)
    for name in make_thumbnails.workflow_names():
        image = make_thumbnails.thumbnail(name, name)
        assert image.size == make_thumbnails.SIZE
        pixels = image.convert("L").getextrema()
        assert pixels[1] - pixels[0] > 100, name  # a picture, not a blank card


def test_recorded_core_nodes_name_their_comfyui_commit():
    with open(CORE) as handle:
        recorded = json.load(handle)
    assert recorded["comfyui_commit"] and recorded["comfyui_version"]
    for node in ("KSampler", "SaveLatent", "LoadLatent", "EmptyLatentImage", "VAEDecode", "CheckpointLoaderSimple"):
        assert node in recorded["nodes"], node
    assert not any("description" in str(spec.get("input", {})).lower() for spec in recorded["nodes"].values())
