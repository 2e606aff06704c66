"""Every example workflow runs to the end in a real ComfyUI, made small: a template that fails for its user fails here.

Each file in example_workflows/ is turned into the prompt the frontend queues (workflow_prompt.py, checked against
the frontend's own graphToPrompt in the browser test below), made small (128 px, 3 steps, batches of at most 2, at
most 2 CFG or guidance values and 2 seeds, the bridge fit and the probe at their smallest settings, one conv
training step) and given random-weight models of the architecture each model file name stands for (and the probe
a threshold the random VAE's cells reach: see FLAGGING_PROBES). Nothing else changes: a node that fails on the
template's own wiring or values fails the test, with ComfyUI's message.
"""
import copy
import glob
import json
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

from latent_lab.core.sweep_grammar import format_values, parse_values
from workflow_builder import Workflow
from workflow_prompt import to_prompt

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from browser_support import browser_page, skip_reason  # noqa: E402
from frontend_support import open_comfyui  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIDE, STEPS, MAX_BATCH, MAX_CFG_VALUES, MAX_SEEDS = 128, 3, 2, 2, 2
FIT_IMAGES = 2  # the fewest the bridge fit takes: one to fit on, one held out to measure
RUN_TIMEOUT = 900
# The model files the templates name, by the architecture each stands for, and the fixture with a random-weight
# model of it. A template naming a file not listed here fails until its architecture is added.
MODEL_FILES = {
    "v1-5-pruned-emaonly.safetensors": "random_sd15_checkpoint",
    "sd_xl_base_1.0.safetensors": "random_sdxl_checkpoint",
    "vae-ft-mse-840000-ema-pruned.safetensors": "random_sd_vae",
    "sdxl_vae.safetensors": "random_sd_vae_b",  # SDXL's VAE has the SD KL-F8 architecture, retrained
}
# Templates whose text encoder ComfyUI builds at a fixed, full size: no random stand-in fits this suite (24 GB, two
# CPU cores, minutes per template). Their Latent Lab nodes run over HTTP in test_formats_integration.py (video
# latents through preview, maps, stats) and test_sweep_models_integration.py (the guidance axis on a tiny
# guidance-distilled model). Each file maps to why it is not queued here.
NOT_RUN_HERE = {
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "Wan 2.1's UMT5-XXL text encoder (5.7B parameters at full size)",
    "wan2.1_t2v_1.3B_fp16.safetensors": "Wan 2.1's template also needs UMT5-XXL",
    "wan_2.1_vae.safetensors": "Wan 2.1's template also needs UMT5-XXL",
    "t5xxl_fp16.safetensors": "Flux.1's T5-XXL text encoder (4.7B parameters at full size)",
    "flux1-dev.safetensors": "Flux.1's template also needs T5-XXL",
    "clip_l.safetensors": "Flux.1's template also needs T5-XXL",
    "ae.safetensors": "Flux.1's template also needs T5-XXL",
}
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
# A real SD VAE puts a "black hole" in every latent, which the probe flags and Spot Repair mends; a random VAE has
# none. At the lowest threshold the probe flags the random VAE's outlying cells, so the repair runs as for a user.
FLAGGING_PROBES = {"LatentLabVAEAnomalyProbe"}


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def model_files(workflow: dict) -> set:
    return {value for node in workflow["nodes"] for value in node.get("widgets_values") or []
            if isinstance(value, str) and value.endswith(MODEL_SUFFIXES)}


CHECKPOINTS = {"random_sd15_checkpoint", "random_sdxl_checkpoint"}
# Templates sharing a checkpoint run back to back: ComfyUI keeps a loaded model only while consecutive prompts use it,
# and loading a checkpoint on a CPU takes up to a minute.
RUN_GROUPS = [set(), {"random_sd15_checkpoint"}, CHECKPOINTS, {"random_sdxl_checkpoint"}]


def run_order(path: str):
    """Group by checkpoints; templates naming a model with no stand-in last (they fail, and -x stops there)."""
    names = model_files(load(path))
    if not names <= set(MODEL_FILES):
        return len(RUN_GROUPS), os.path.basename(path)
    return RUN_GROUPS.index({MODEL_FILES[name] for name in names} & CHECKPOINTS), os.path.basename(path)


WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")), key=run_order)


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info()


def widget_options(object_info: dict, class_type: str, name: str) -> dict:
    spec = object_info[class_type]["input"]
    entry = spec.get("required", {}).get(name) or spec.get("optional", {}).get(name)
    return entry[1] if entry and len(entry) > 1 and isinstance(entry[1], dict) else {}


def smaller_side(value: int, longest: int) -> int:
    return max(8, round(value * SIDE / longest / 8) * 8)


def shrink_sizes(text: str, radius: int) -> str:
    """A probe's resolution list scaled so its largest size is SIDE, each at least the probe's smallest image."""
    sizes = [int(item) for item in text.replace(",", " ").split()]
    if not sizes:
        return text
    smallest = (2 * radius + 2) * 8
    return ", ".join(str(max(smallest, smaller_side(size, max(sizes)))) for size in sizes)


def fewer(text: str, kind: str, keep: int, base_seed: int = 0) -> str:
    values = parse_values(text, kind, base_seed)
    return text if len(values) <= keep else format_values(values[:keep - 1] + values[-1:], kind)


def make_small(prompt: dict, object_info: dict, models: dict) -> dict:
    """The prompt at test size, with the random models; every other value stays the template's."""
    small = copy.deepcopy(prompt)
    for node in small.values():
        inputs, class_type = node["inputs"], node["class_type"]
        options = {name: widget_options(object_info, class_type, name) for name in inputs}
        if {"width", "height"} <= set(inputs) and "LATENT" in object_info[class_type]["output"]:
            longest = max(inputs["width"], inputs["height"])
            inputs["width"], inputs["height"] = (smaller_side(inputs[k], longest) for k in ("width", "height"))
        small_values = {
            "batch_size": lambda v: min(v, MAX_BATCH),
            "steps": lambda v: min(v, STEPS),
            "cfg_values": lambda v: fewer(v, "cfg", MAX_CFG_VALUES),
            "seeds": lambda v: fewer(v, "seed", MAX_SEEDS, inputs.get("seed", 0)) if v.strip() else v,
            "guidance_values": lambda v: fewer(v, "guidance", MAX_CFG_VALUES) if v.strip() else v,
            "calibration_images": lambda v: min(v, FIT_IMAGES),
            "calibration_size": lambda v: options["calibration_size"]["min"],
            "augment_views": lambda v: options["augment_views"]["min"],
            "conv_steps": lambda v: min(v, 1),  # the conv bridge is trained and saved; how well is not tested
            "verify_decodes": lambda v: options["verify_decodes"]["min"],
            "map_passes": lambda v: options["map_passes"]["min"],
            "sweep_sizes": lambda v: shrink_sizes(v, inputs.get("radius", 1)),
        }
        if class_type in FLAGGING_PROBES and not isinstance(inputs.get("threshold"), list):
            inputs["threshold"] = options["threshold"]["min"]
        for name, value in inputs.items():
            if isinstance(value, list):
                continue
            if name in small_values:
                inputs[name] = small_values[name](value)
            elif isinstance(value, str) and value.endswith(MODEL_SUFFIXES):
                assert value in models, (f"{class_type}.{name} names {value!r}: add it to MODEL_FILES with a random "
                                         "model of the architecture it stands for")
                inputs[name] = models[value]
    return small


def provide_input_images(server, prompt: dict, object_info: dict) -> None:
    """Input-folder images the prompt names (ComfyUI ships example.png there), as SIDE px test pictures."""
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if widget_options(object_info, node["class_type"], name).get("image_upload") and isinstance(value, str):
                path = os.path.join(server.input_dir, value)
                if not os.path.exists(path):
                    Image.fromarray(input_picture(SIDE)).save(path)


def input_picture(side: int) -> np.ndarray:
    """Color gradients with a bright disc: varied content for the VAE probes."""
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05).astype(float)
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * 0.8 + disc[..., None] * 0.2
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def output_nodes(prompt: dict, object_info: dict) -> set:
    return {node_id for node_id, node in prompt.items() if object_info[node["class_type"]].get("output_node")}


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_example_workflow_runs(comfy_server, object_info, request, path):
    workflow = load(path)
    too_big = sorted({NOT_RUN_HERE[name] for name in model_files(workflow) if name in NOT_RUN_HERE})
    if too_big:
        pytest.skip(f"not queued on this machine: {'; '.join(too_big)}")
    models = {name: request.getfixturevalue(MODEL_FILES[name])
              for name in model_files(workflow) if name in MODEL_FILES}
    prompt = make_small(to_prompt(workflow, object_info), object_info, models)
    provide_input_images(comfy_server, prompt, object_info)
    started = time.monotonic()
    try:
        outputs = comfy_server.run(prompt, timeout=RUN_TIMEOUT)
    except comfy_server.PromptError as error:
        pytest.fail(f"{os.path.basename(path)}, made small, fails in ComfyUI: {error}")
    print(f"{os.path.basename(path)}: {time.monotonic() - started:.0f} s")
    missing = sorted(output_nodes(prompt, object_info) - set(outputs), key=int)
    assert not missing, f"output nodes that showed nothing: {[prompt[i]['class_type'] for i in missing]}"


def test_every_architecture_named_has_a_model():
    named = set().union(*(model_files(load(path)) for path in WORKFLOWS))
    known = set(MODEL_FILES) | set(NOT_RUN_HERE)
    assert named <= known, f"model files with no random stand-in: {sorted(named - known)}"


def test_make_small_shrinks_and_keeps_the_rest(object_info):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "named.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 480, "batch_size": 4}},
        "3": {"class_type": "LatentLabCFGSweep", "inputs": {
            "model": ["1", 0], "seed": 5, "steps": 20, "cfg_values": "2-12 [6]", "seeds": "+4",
            "guidance_values": "2-4.5 (+0.5)", "sampler_name": "euler", "denoise": 1.0}},
        "4": {"class_type": "LatentLabFitBridge", "inputs": {
            "calibration_images": 16, "calibration_size": 256, "augment_views": 4, "conv_steps": 2000, "seed": 3}},
        "5": {"class_type": "LatentLabVAEAnomalyProbe", "inputs": {
            "threshold": 6.0, "radius": 3, "verify_decodes": 8, "map_passes": 24, "sweep_sizes": "256, 384, 512"}},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": "latentlab/x", "images": ["2", 0]}},
    }
    small = make_small(prompt, object_info, {"named.safetensors": "random.safetensors"})
    assert small["1"]["inputs"] == {"ckpt_name": "random.safetensors"}
    assert small["2"]["inputs"] == {"width": SIDE, "height": 72, "batch_size": MAX_BATCH}
    sweep = small["3"]["inputs"]
    assert (parse_values(sweep["cfg_values"], "cfg"), parse_values(sweep["seeds"], "seed", 5),
            parse_values(sweep["guidance_values"], "guidance")) == ([2.0, 12.0], [5, 8], [2.0, 4.5])
    assert {k: sweep[k] for k in ("model", "seed", "steps", "sampler_name", "denoise")} == \
        {"model": ["1", 0], "seed": 5, "steps": STEPS, "sampler_name": "euler", "denoise": 1.0}
    assert small["4"]["inputs"] == {"calibration_images": FIT_IMAGES, "calibration_size": 64, "augment_views": 1,
                                    "conv_steps": 1, "seed": 3}
    assert small["5"]["inputs"] == {"threshold": 2.0, "radius": 3, "verify_decodes": 3, "map_passes": 3,
                                    "sweep_sizes": "64, 96, 128"}
    assert small["6"] == prompt["6"] and prompt["2"]["inputs"]["width"] == 832
    with pytest.raises(AssertionError, match="MODEL_FILES"):
        make_small(prompt, object_info, {})


# The frontend's own conversion, for the comparison below.
FRONTEND_PROMPT = """async ([workflow, name]) => {
    await window.app.loadGraphData(structuredClone(workflow), true, true, name);
    const { output } = await window.app.graphToPrompt();
    return output;
}"""


PROMPT_WITH_SYNTAX = "a {red|red} lighthouse /* at dusk */ \\{bold\\} // more"


def frontend_only_graph() -> dict:
    """A graph with what only the frontend resolves: a Note, a Reroute, a PrimitiveNode driving a seed (muted: it
    still applies), comments and choices in a prompt, a bypassed node that passes its input on and one that cannot
    (no input of its output's type), a muted node feeding another node."""
    graph = Workflow()
    checkpoint = graph.add("CheckpointLoaderSimple", {"ckpt_name": "model.safetensors"})
    positive = graph.add("CLIPTextEncode", {"text": PROMPT_WITH_SYNTAX})
    negative = graph.add("CLIPTextEncode", {"text": "blurry"})
    empty = graph.add("EmptyLatentImage")
    sampler = graph.add("KSampler", {"seed": 42})
    clamp, center, maximize = (graph.add(kind) for kind in ("LatentLabSoftClamp", "LatentLabCenter",
                                                             "LatentLabMaximize"))
    decode_before, decode_after = graph.add("VAEDecode"), graph.add("VAEDecode")
    preview_before, preview_after = graph.add("PreviewImage"), graph.add("PreviewImage")
    for target in (positive, negative):
        graph.connect(checkpoint, "CLIP", target, "clip")
    for source, target, name in ((checkpoint, sampler, "model"), (positive, sampler, "positive"),
                                 (negative, sampler, "negative"), (empty, sampler, "latent_image"),
                                 (sampler, clamp, "latent"), (clamp, center, "latent"), (center, maximize, "latent"),
                                 (maximize, decode_after, "samples"), (sampler, decode_before, "samples"),
                                 (decode_before, preview_before, "images"), (decode_after, preview_after, "images")):
        graph.connect(source, 0, target, name)
    for decode in (decode_before, decode_after):
        graph.connect(checkpoint, "VAE", decode, "vae")
    workflow = graph.to_json()
    add_note(workflow)
    insert_reroute(workflow, link_id=clamp["inputs"][0]["link"])
    drive_seed(workflow, sampler)
    clamp["mode"] = decode_before["mode"] = 4
    maximize["mode"] = 2
    return workflow


def test_frontend_only_nodes_are_resolved(object_info):
    prompt = to_prompt(frontend_only_graph(), object_info)
    assert set(prompt) == {"1", "2", "3", "4", "5", "7", "10", "11", "12"}  # no bypassed, muted or frontend-only node
    assert prompt["5"]["inputs"]["seed"] == 1234, "the primitive's value"
    assert prompt["7"]["inputs"]["latent"] == ["5", 0], "through the bypassed soft clamp and the reroute"
    assert "samples" not in prompt["10"]["inputs"], "its input came from the muted maximize"
    assert "images" not in prompt["11"]["inputs"] and prompt["12"]["inputs"]["images"] == ["10", 0]
    assert prompt["2"]["inputs"]["text"] == "a red lighthouse  {bold} "


def add_note(workflow: dict) -> None:
    workflow["nodes"].append({"id": 100, "type": "Note", "pos": [0, 600], "size": [200, 80],
                              "flags": {}, "order": 99, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                              "widgets_values": ["a note"]})


def insert_reroute(workflow: dict, link_id: int) -> None:
    link = next(l for l in workflow["links"] if l[0] == link_id)
    new_id = max(l[0] for l in workflow["links"]) + 1
    nodes = {node["id"]: node for node in workflow["nodes"]}
    reroute = {"id": 101, "type": "Reroute", "pos": [600, 600], "size": [75, 26], "flags": {}, "order": 98, "mode": 0,
               "inputs": [{"name": "", "type": "*", "link": link_id}],
               "outputs": [{"name": "", "type": link[5], "links": [new_id]}],
               "properties": {"showOutputText": False, "horizontal": False}}
    workflow["nodes"].append(reroute)
    nodes[link[3]]["inputs"][link[4]]["link"] = new_id
    workflow["links"].append([new_id, 101, 0, link[3], link[4], link[5]])
    link[3], link[4] = 101, 0


def drive_seed(workflow: dict, sampler: dict) -> None:
    link_id = max(l[0] for l in workflow["links"]) + 1
    primitive = {"id": 102, "type": "PrimitiveNode", "pos": [0, 700], "size": [210, 82], "flags": {}, "order": 0,
                 "mode": 2, "inputs": [], "properties": {"Run widget replace on values": False},
                 "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "seed"}, "links": [link_id]}],
                 "widgets_values": [1234, "fixed"]}
    workflow["nodes"].append(primitive)
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": link_id})
    workflow["links"].append([link_id, 102, 0, sampler["id"], len(sampler["inputs"]) - 1, "INT"])


def comparable(prompt: dict) -> dict:
    return {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()}


@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def test_prompt_matches_the_frontends(ui_server):
    """to_prompt gives what the frontend queues, for every template and for graphs with frontend-only nodes."""
    info = ui_server.object_info()
    cases = {os.path.basename(path): load(path) for path in WORKFLOWS}
    cases["frontend-only nodes"] = frontend_only_graph()
    with browser_page() as (page, _, _):
        open_comfyui(page, ui_server, nodes_2=False)
        for name, workflow in cases.items():
            theirs = page.evaluate(FRONTEND_PROMPT, [workflow, name])
            assert comparable(to_prompt(workflow, info)) == comparable(theirs), f"{ui_server.frontend}: {name}"
