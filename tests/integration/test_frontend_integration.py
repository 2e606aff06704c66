"""Frontend inside real ComfyUI: the Explorer's routes, our extension in ComfyUI's own frontend
(comfyui-frontend-package, driven by Debian's chromium through Playwright), the workflow templates, the sweep
field and the Explorer listing a latent saved by Save Latent. Browser parts skip where Playwright or chromium
is missing.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
from safetensors.torch import load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from browser_support import artifact_path, browser_page, skip_reason  # noqa: E402
from frontend_support import open_comfyui  # noqa: E402
from workflow_builder import problems  # noqa: E402

from latent_lab.core import latent_files  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get(server, path: str):
    """(status, content type, body) without raising on 4xx."""
    try:
        with urllib.request.urlopen(server.url + path, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def save_latent(server) -> dict:
    """A latent saved by ComfyUI's own Save Latent node on `server`: the entry as the Explorer lists it."""
    prompt = {
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 2}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["empty", 0], "filename_prefix": "latentlab_it/explorer"}},
    }
    outputs = server.run(prompt, timeout=120)
    saved = outputs["save"]["latents"][0]
    assert saved["type"] == "output" and saved["subfolder"] == "latentlab_it"
    return saved


@pytest.fixture(scope="module")
def saved_latent(comfy_server):
    return save_latent(comfy_server)


def test_explorer_page_and_scripts_are_served(comfy_server):
    status, kind, body = get(comfy_server, "/latentlab/")
    assert status == 200 and "text/html" in kind and b"Latent Explorer" in body
    for name in ("explorer.js", "latent_core.js", "latent_lab_data.json", "explorer.css"):
        status, _, body = get(comfy_server, f"/latentlab/{name}")
        assert status == 200 and body, name
    status, _, _ = get(comfy_server, "/latentlab")
    assert status == 200  # redirected to /latentlab/


def test_explorer_lists_and_serves_a_latent_saved_by_save_latent(comfy_server, saved_latent):
    status, kind, body = get(comfy_server, "/latentlab/api/latents")
    assert status == 200 and "json" in kind
    files = json.loads(body)["files"]
    entry = next(f for f in files if f["filename"] == saved_latent["filename"])
    assert entry["type"] == "output" and entry["subfolder"] == "latentlab_it"
    assert entry["shape"] == [2, 4, 6, 8] and entry["dtype"] == "F32" and not entry["too_large"]
    query = urllib.parse.urlencode({k: saved_latent[k] for k in ("type", "subfolder", "filename")})
    status, kind, body = get(comfy_server, f"/latentlab/api/latent?{query}")
    assert status == 200 and kind.startswith("application/octet-stream")
    tensors = load(body)
    assert torch.equal(tensors["latent_tensor"], torch.zeros(2, 4, 6, 8))


def test_routes_refuse_everything_but_latents_inside_the_folders(comfy_server, saved_latent, tmp_path):
    outside = tmp_path / "secret.latent"
    outside.write_bytes(b"outside")
    link = os.path.join(comfy_server.output_dir, "latentlab_it", "linked_out.latent")
    if not os.path.lexists(link):
        os.symlink(outside, link)
    big = os.path.join(comfy_server.input_dir, "big.latent")
    with open(big, "wb") as handle:
        handle.truncate(latent_files.MAX_BYTES + 1)
    with open(os.path.join(comfy_server.output_dir, "notes.txt"), "w") as handle:
        handle.write("text")
    cases = {
        "type=output&subfolder=latentlab_it&filename=linked_out.latent": 403,
        "type=output&subfolder=..&filename=server.log": 403,
        "type=output&subfolder=latentlab_it/../..&filename=x.latent": 403,
        f"type=output&subfolder={urllib.parse.quote(str(tmp_path))}&filename=secret.latent": 403,
        "type=output&filename=..%2Fsecret.latent": 403,
        "type=output&filename=notes.txt": 403,
        "type=output&filename=missing.latent": 404,
        "type=temp&filename=x.latent": 400,
        "type=input&filename=big.latent": 413,
    }
    for query, expected_status in cases.items():
        status, kind, body = get(comfy_server, f"/latentlab/api/latent?{query}")
        assert status == expected_status, (query, status, body[:200])
        answer = json.loads(body)
        assert "json" in kind and answer["error"] and answer["fix"] and answer["status"] == expected_status, query
    status, _, body = get(comfy_server, "/latentlab/api/nothing")
    assert status == 404 and json.loads(body)["error"]
    listed = json.loads(get(comfy_server, "/latentlab/api/latents")[2])["files"]
    names = {f["filename"]: f for f in listed}
    assert "linked_out.latent" not in names and "notes.txt" not in names
    assert names["big.latent"]["too_large"] is True


def test_workflow_templates_list_our_examples(comfy_server):
    templates = comfy_server.get_json("/workflow_templates")
    ours = templates[comfy_server.pack_dir_name]
    expected = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(ROOT, "example_workflows"))
                      if n.endswith(".json"))
    assert sorted(ours) == expected
    for name in ours:
        base = f"/api/workflow_templates/{comfy_server.pack_dir_name}/{urllib.parse.quote(name)}"
        status, _, body = get(comfy_server, base + ".json")
        assert status == 200 and json.loads(body)
        status, kind, _ = get(comfy_server, base + ".jpg")  # ComfyUI 0.3.64 serves thumbnails; 0.38 only .json
        assert status == 200 and "image/jpeg" in kind, name


# ------------------------------------------------------------------------------------------------ in the browser

needs_browser = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def comfy_page(ui_server):
    """ComfyUI's page on the bundled frontend, then on the newest package (classic mode)."""
    if skip_reason():
        pytest.skip(skip_reason())
    with browser_page(viewport=(1600, 1000)) as (page, console, errors):
        open_comfyui(page, ui_server, nodes_2=False)
        yield page, console, errors


INSPECTION = "Inspect a latent (SD1.5)"
# A node's right-click entries from extensions: the getNodeMenuItems hook where the frontend has it, else the
# patched getExtraMenuOptions.
NODE_MENU = """((node) => { if (typeof window.app.collectNodeMenuItems === 'function')
    return window.app.collectNodeMenuItems(node).filter(Boolean);
    const options = []; node.getExtraMenuOptions(window.app.canvas, options); return options.filter(Boolean); })"""


def ours(text: str) -> bool:
    lowered = text.lower()
    return "latentlab" in lowered or "latent_lab" in lowered or "latent lab" in lowered or "ComfyUI-LatentLab" in text


@needs_browser
def test_extension_loads_without_console_errors(ui_server, comfy_page):
    page, console, errors = comfy_page
    names = page.evaluate("window.app.extensions.map((e) => e.name)")
    assert "LatentLab.Frontend" in names
    assert [e for e in errors if ours(e)] == []
    assert [text for kind, text in console if kind in ("error", "http-error") and ours(text)] == []
    with open(artifact_path(f"{ui_server.frontend}_loaded_errors.txt"), "w") as handle:  # everything else, for a person to read
        handle.write("\n".join(f"{kind}: {text}" for kind, text in console if kind in ("error", "http-error", "warning")))


@needs_browser
def test_example_workflow_opens_from_the_templates(ui_server, comfy_page):
    page, _, errors = comfy_page
    module = ui_server.pack_dir_name
    listed = page.evaluate("async () => (await (await import('/scripts/api.js')).api.getWorkflowTemplates())")
    assert "index" not in listed[module] and INSPECTION in listed[module]
    workflow = json.loads(get(ui_server, f"/api/workflow_templates/{module}/{urllib.parse.quote(INSPECTION)}.json")[2])
    opened = _open_from_templates_dialog(page, module, INSPECTION)
    with open(artifact_path(f"{ui_server.frontend}_template_route.txt"), "w") as handle:
        handle.write("templates dialog\n" if opened else "app.loadGraphData (the dialog could not be driven)\n")
    if not opened:
        page.evaluate("(workflow) => window.app.loadGraphData(workflow, true, true, 'inspection')", workflow)
    page.wait_for_timeout(800)
    types = page.evaluate("window.app.graph.nodes.map((n) => n.type)")
    assert sorted(types) == sorted(n["type"] for n in workflow["nodes"])
    # Newer frontends also flag loaders whose model file is not installed (none is, here): only node types count.
    missing = page.evaluate("""window.app.graph.nodes.filter((n) => !LiteGraph.registered_node_types[n.type]
        || (n.has_errors && n.type.startsWith('LatentLab'))).map((n) => n.type)""")
    assert missing == []
    saved = page.evaluate("window.app.graph.serialize()")
    by_id = {n["id"]: n for n in saved["nodes"]}
    for node in workflow["nodes"]:
        assert (by_id[node["id"]].get("widgets_values") or []) == node["widgets_values"], node["type"]
    page.screenshot(path=artifact_path(f"{ui_server.frontend}_template_opened.png"))
    assert [e for e in errors if ours(e)] == []


def _open_from_templates_dialog(page, module: str, name: str) -> bool:
    """Workflow > Browse Templates, our category, the card. False where the dialog could not be driven."""
    try:
        page.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        page.get_by_text(module, exact=True).first.click(timeout=10000)
        page.locator(f"[data-testid='template-workflow-{name}'], :text-is('{name}')").first.click(timeout=10000)
        page.wait_for_function("window.app.graph.nodes.some((n) => n.type === 'LatentLabStats')", timeout=15000)
        return True
    except Exception:  # noqa: BLE001  the dialog's markup changes between frontend versions
        page.keyboard.press("Escape")
        return False


@needs_browser
def test_node_text_is_shown_above_the_images_without_overlap(ui_server, comfy_page):
    page, _, errors = comfy_page
    page.evaluate("""async () => {
        const graph = window.app.graph;
        graph.clear();
        const empty = LiteGraph.createNode('EmptyLatentImage');
        empty.pos = [40, 80];
        graph.add(empty);
        empty.widgets.find((w) => w.name === 'width').value = 64;
        empty.widgets.find((w) => w.name === 'height').value = 64;
        const stats = LiteGraph.createNode('LatentLabStats');
        stats.pos = [400, 80];
        graph.add(stats);
        stats.widgets.find((w) => w.name === 'format').value = 'sdxl';
        empty.connect(0, stats, 0);
        await window.app.queuePrompt(0, 1);
    }""")
    page.wait_for_function("""() => { const n = window.app.graph.nodes.find((n) => n.type === 'LatentLabStats');
        return n?.latentLabLines?.length > 0 && n.imgs?.length > 0; }""", timeout=120000)
    page.wait_for_timeout(1000)
    layout = page.evaluate("""() => { const n = window.app.graph.nodes.find((n) => n.type === 'LatentLabStats');
        window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true);
        return n.widgets.map((w) => [w.name, w.y, w.computedHeight]).concat([['node', 0, n.size[1]]]); }""")
    rows = {name: (y, height) for name, y, height in layout}
    text_y, text_height = rows["latentlab_text"]
    image_y, _ = rows["$$canvas-image-preview"]
    assert text_y + text_height <= image_y + 1
    lines = page.evaluate("window.app.graph.nodes.find((n) => n.type === 'LatentLabStats').latentLabLines")
    assert any("luminance" in line for line in lines)
    saved = page.evaluate("window.app.graph.serialize().nodes.find((n) => n.type === 'LatentLabStats').widgets_values")
    assert saved == ["sdxl", "scaled", 3.0, "comfyui", 0]
    _focus_node(page, "LatentLabStats")
    page.screenshot(path=artifact_path(f"{ui_server.frontend}_node_text.png"))
    assert [e for e in errors if ours(e)] == []


def _focus_node(page, node_type: str) -> None:
    page.evaluate("""(type) => { const n = window.app.graph.nodes.find((n) => n.type === type);
        const canvas = window.app.canvas; canvas.ds.scale = 1;
        canvas.ds.offset = [-n.pos[0] + 60, -n.pos[1] + 80]; canvas.setDirty(true, true); }""", node_type)
    page.wait_for_timeout(400)


@needs_browser
def test_sweep_field_shows_values_and_cell_count(ui_server, comfy_page):
    page, _, errors = comfy_page
    info = ui_server.object_info()
    if "LatentLabCFGSweep" not in info:
        pytest.skip("This Latent Lab has no CFG Sweep Sampler node yet.")
    lines = page.evaluate("""() => {
        const graph = window.app.graph;
        graph.clear();
        const node = LiteGraph.createNode('LatentLabCFGSweep');
        node.pos = [60, 60];
        graph.add(node);
        node.widgets.find((w) => w.name === 'cfg_values').value = '2-12 [6]';
        node.widgets.find((w) => w.name === 'seeds').value = '+2';
        node.widgets.find((w) => w.name === 'seed').value = 7;
        return node.latentLabSweepLines().map((l) => l.text);
    }""")
    assert lines[0] == "→ 6 CFG: 2, 4, 6, 8, 10, 12"
    assert lines[1] == "× 2 seeds: 7, 8 = 12 cells"
    # a person clicks the CFG field and types: the preview follows before the value is committed
    _focus_node(page, "LatentLabCFGSweep")
    x, y = page.evaluate("""() => { const n = window.app.graph.nodes[0]; const w = n.widgets.find((w) => w.name === 'cfg_values');
        const canvas = window.app.canvas; const ds = canvas.ds; const rect = canvas.canvas.getBoundingClientRect();
        return [rect.left + (n.pos[0] + n.size[0] / 2 + ds.offset[0]) * ds.scale,
                rect.top + (n.pos[1] + w.y + 10 + ds.offset[1]) * ds.scale]; }""")
    page.mouse.click(x, y)
    box = page.locator(".graphdialog .value")
    box.wait_for(timeout=10000)
    box.fill("3, 5, 7,")
    typed = page.evaluate("window.app.graph.nodes[0].latentLabSweepLines().map((l) => [l.text, l.ok !== false])")
    assert typed[0][0].startswith("✗") and typed[0][1] is False
    box.fill("3, 5, 7")
    typed = page.evaluate("window.app.graph.nodes[0].latentLabSweepLines().map((l) => l.text)")
    assert typed[0] == "→ 3 CFG: 3, 5, 7" and typed[1].endswith("= 6 cells")
    page.screenshot(path=artifact_path(f"{ui_server.frontend}_sweep_field.png"))
    box.press("Escape")
    saved = page.evaluate("window.app.graph.serialize()")
    specs = {"LatentLabCFGSweep": info["LatentLabCFGSweep"]}
    node = saved["nodes"][0]
    found = [p for p in problems({"nodes": [node], "links": []}, specs) if "not connected" not in p]
    assert found == [], found
    assert None not in node["widgets_values"]
    assert [e for e in errors if ours(e)] == []


@needs_browser
def test_sweep_field_shows_guidance_values_and_keeps_them_last(ui_server, comfy_page):
    page, _, errors = comfy_page
    info = ui_server.object_info()
    if "guidance_values" not in info["LatentLabCFGSweep"]["input"].get("optional", {}):
        pytest.skip("This CFG Sweep Sampler has no guidance axis yet.")
    result = page.evaluate("""() => {
        const graph = window.app.graph;
        graph.clear();
        const node = LiteGraph.createNode('LatentLabCFGSweep');
        graph.add(node);
        const names = node.widgets.map((w) => w.name);
        const empty = node.latentLabSweepLines().map((l) => l.text);
        node.widgets.find((w) => w.name === 'cfg_values').value = '1';
        node.widgets.find((w) => w.name === 'guidance_values').value = '2-4.5 (+0.5)';
        const guided = node.latentLabSweepLines().map((l) => l.text);
        node.widgets.find((w) => w.name === 'guidance_values').value = '2, 150';
        const bad = node.latentLabSweepLines().map((l) => l.text);
        node.widgets.find((w) => w.name === 'guidance_values').value = '2-4.5 (+0.5)';
        return {names, empty, guided, bad, saved: window.app.graph.serialize().nodes[0].widgets_values};
    }""")
    assert "guidance_values" in result["names"]
    assert "guidance" not in result["empty"][0]
    assert result["guided"][0] == "→ 1 CFG: 1 × 6 guidance: 2, 2.5, 3, 3.5, 4, 4.5"
    assert result["guided"][1].endswith("= 6 cells")
    assert result["bad"][0].startswith("✗ guidance 150")
    assert result["saved"][-1] == "2-4.5 (+0.5)"
    assert [e for e in errors if ours(e)] == []


@needs_browser
def test_explorer_lists_the_saved_latent_and_opens_it(ui_server, comfy_page):
    page, _, errors = comfy_page
    saved_latent = save_latent(ui_server)
    explorer = page.context.new_page()
    try:
        explorer.goto(ui_server.url + "/latentlab/")
        explorer.wait_for_selector("body[data-ready=true]", timeout=30000)
        item = explorer.locator("#file-list li", has_text=saved_latent["filename"])
        assert item.count() == 1
        item.click()
        explorer.wait_for_function("document.querySelector('#file-info').textContent.includes('2×4×6×8')")
        size = explorer.evaluate("[document.querySelector('#preview').width, document.querySelector('#preview').height]")
        assert size == [8, 6]
        explorer.screenshot(path=artifact_path(f"{ui_server.frontend}_explorer.png"), full_page=True)
    finally:
        explorer.close()
    # the Save Latent node's button opens the Explorer on the file it saved
    url = page.evaluate("""(saved) => { window.app.graph.clear(); const node = LiteGraph.createNode('SaveLatent');
        window.app.graph.add(node); node.onExecuted({ latents: [saved] });
        let opened = null; const original = window.open; window.open = (u) => { opened = u; return null; };
        node.widgets.find((w) => w.name === 'Open in Latent Explorer').callback();
        window.open = original; return [opened, node.serialize().widgets_values]; }""", saved_latent)
    assert "/latentlab/?" in url[0] and urllib.parse.quote(saved_latent["filename"]) in url[0]
    assert url[1] == ["latents/ComfyUI"]  # the button is not saved with the workflow
    # a node whose LATENT goes to that Save Latent node offers the same in its right-click menu
    entries = page.evaluate("""() => { const graph = window.app.graph; const save = graph.nodes[0];
        const empty = LiteGraph.createNode('EmptyLatentImage'); graph.add(empty); empty.connect(0, save, 0);
        return nodeMenu(empty).map((o) => o.content); }""".replace("nodeMenu", NODE_MENU))
    assert f"Open in Latent Explorer ({saved_latent['filename']})" in entries
    assert [e for e in errors if ours(e)] == []
