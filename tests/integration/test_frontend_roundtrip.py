"""Saved graphs survive the frontend: every example workflow, loaded and saved twice, keeps every widget value, on
ComfyUI's bundled frontend and the newest comfyui-frontend-package, in classic mode and under Nodes 2.0. Also: no
warning from a deprecated API our code calls, and node text readable under Nodes 2.0.
"""
import glob
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from browser_support import artifact_path, browser_page, skip_reason  # noqa: E402
from frontend_support import NODES_2_SETTING, frontend_version, open_comfyui, pack_warnings, set_setting  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

SAVE_LOAD_SAVE = """async ([workflow, name]) => {
    const serialize = () => JSON.parse(JSON.stringify(window.app.graph.serialize()));
    await window.app.loadGraphData(structuredClone(workflow), true, true, name);
    const first = serialize();
    await window.app.loadGraphData(structuredClone(first), true, true, name);
    const second = serialize();
    await window.app.loadGraphData(structuredClone(second), true, true, name);
    return [first, second, serialize()];
}"""


# Whether the frontend shows DOM widgets on the page: a core CLIPTextEncode's text box.
DOM_WIDGETS_RENDERED = """() => { const graph = window.app.graph; const node = LiteGraph.createNode('CLIPTextEncode');
    node.pos = [40, 400]; graph.add(node); const shown = [...document.querySelectorAll('textarea')].some((e) =>
    e.getBoundingClientRect().width > 0); graph.remove(node); return shown; }"""


@pytest.fixture(scope="module", params=["classic", "nodes_2"])
def page_in_mode(request, ui_server):
    with browser_page(viewport=(1600, 1000)) as (page, _, _):
        errors = open_comfyui(page, ui_server, nodes_2=request.param == "nodes_2")
        label = f"{ui_server.frontend}-{frontend_version(page)}-{request.param}"
        yield page, errors, label
    set_setting(ui_server, NODES_2_SETTING, False)  # the servers are shared with other tests: leave them classic


TOUCHED_CORE_NODES = ("SaveLatent", "LoadLatent")  # the extension adds a button to these


def widget_values(graph: dict, only_ours: bool = False) -> dict:
    return {node["id"]: node.get("widgets_values") or [] for node in graph["nodes"]
            if not only_ours or node["type"].startswith("LatentLab") or node["type"] in TOUCHED_CORE_NODES}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: os.path.splitext(os.path.basename(p))[0])
def test_example_workflow_survives_save_load_save(page_in_mode, path):
    """Our nodes (and the core nodes we touch) keep the template's values; every node keeps its first save's
    values through the next loads and saves (core nodes may add values of their own on the first save)."""
    page, errors, label = page_in_mode
    with open(path) as handle:
        workflow = json.load(handle)
    saves = page.evaluate(SAVE_LOAD_SAVE, [workflow, os.path.basename(path)])
    expected = widget_values(workflow, only_ours=True)
    for number, saved in enumerate(saves, 1):
        assert widget_values(saved, only_ours=True) == expected, f"{label}: save {number} changed our widget values"
        assert widget_values(saved) == widget_values(saves[0]), f"{label}: save {number} differs from save 1"
        for node in saved["nodes"]:
            named = node.get("widgets_values_named")
            if named is not None:  # frontends that also save by name must agree with the list
                assert list(named.values()) == node["widgets_values"], f"{label}: node {node['id']} {node['type']}"
    assert errors == [], f"{label}: {errors}"
    assert pack_warnings(page) == [], label


def test_graph_saved_with_shifted_values_is_restored_from_names(page_in_mode):
    """A sweep node saved by a frontend that writes names too, with its list shifted one place left (what
    compacting an already compact list did): its values come back from the names."""
    page, _, label = page_in_mode
    supports_names = page.evaluate("""() => { const node = LiteGraph.createNode('LatentLabCFGSweep');
        return 'widgets_values_named' in node.serialize(); }""")
    if not supports_names:
        pytest.skip(f"{label}: this frontend saves no widgets_values_named")
    path = os.path.join(ROOT, "example_workflows", "CFG sweep grid (SD1.5).json")
    with open(path) as handle:
        workflow = json.load(handle)
    good = workflow["nodes"][[n["type"] for n in workflow["nodes"]].index("LatentLabCFGSweep")]
    restored = page.evaluate("""async ([workflow, good]) => {
        await window.app.loadGraphData(structuredClone(workflow), true, true, 'sweep');
        const node = window.app.graph.nodes.find((n) => n.type === 'LatentLabCFGSweep');
        const named = node.serialize().widgets_values_named;
        const broken = structuredClone(window.app.graph.serialize());
        const entry = broken.nodes.find((n) => String(n.id) === String(node.id));
        entry.widgets_values = [...good.widgets_values.slice(0, 4), ...good.widgets_values.slice(5), null];
        entry.widgets_values_named = named;
        await window.app.loadGraphData(broken, true, true, 'sweep');
        return window.app.graph.nodes.find((n) => n.type === 'LatentLabCFGSweep').serialize().widgets_values;
    }""", [workflow, good])
    assert restored == good["widgets_values"], label


def test_explorer_menu_entry_uses_no_deprecated_api(page_in_mode):
    page, errors, label = page_in_mode
    pack_warnings(page)
    entries = page.evaluate("""() => { const graph = window.app.graph; graph.clear();
        const empty = LiteGraph.createNode('EmptyLatentImage'); graph.add(empty);
        const save = LiteGraph.createNode('SaveLatent'); graph.add(save); empty.connect(0, save, 0);
        if (typeof window.app.collectNodeMenuItems === 'function')
            return window.app.collectNodeMenuItems(empty).filter(Boolean).map((o) => o.content);
        const options = []; empty.getExtraMenuOptions(window.app.canvas, options);
        return options.filter(Boolean).map((o) => o.content); }""")
    assert entries.count("Open in Latent Explorer") == 1, f"{label}: {entries}"
    assert pack_warnings(page) == [], label
    assert errors == [], label


def test_node_text_is_whole_and_visible(page_in_mode):
    page, errors, label = page_in_mode
    page.evaluate("""async () => { const graph = window.app.graph; graph.clear();
        const empty = LiteGraph.createNode('EmptyLatentImage'); empty.pos = [40, 80]; graph.add(empty);
        empty.widgets.find((w) => w.name === 'width').value = 64;
        empty.widgets.find((w) => w.name === 'height').value = 64;
        const stats = LiteGraph.createNode('LatentLabStats');
        if (!stats) throw new Error('LiteGraph.createNode(LatentLabStats) failed');
        stats.pos = [420, 80]; graph.add(stats);
        stats.widgets.find((w) => w.name === 'format').value = 'sdxl';
        empty.connect(0, stats, 0);
        await window.app.queuePrompt(0, 1); }""")
    page.wait_for_function("""() => window.app.graph.nodes.find((n) => n.type === 'LatentLabStats')?.latentLabLines?.length > 0""",
                           timeout=120000)
    page.wait_for_timeout(1500)
    box = page.evaluate("""() => { const node = window.app.graph.nodes.find((n) => n.type === 'LatentLabStats');
        const pre = [...document.querySelectorAll('pre.latentlab-text')].find((e) => e.textContent.length > 0);
        if (!pre) return null; const rect = pre.getBoundingClientRect();
        return { text: pre.textContent, lines: node.latentLabLines, width: rect.width, height: rect.height,
                 scrollWidth: pre.scrollWidth, clientWidth: pre.clientWidth,
                 visible: rect.width > 0 && rect.height > 0 && getComputedStyle(pre).visibility !== 'hidden' }; }""")
    page.screenshot(path=artifact_path(f"{label}_node_text.png"))
    if box is None and label.endswith("nodes_2") and not page.evaluate(DOM_WIDGETS_RENDERED):
        pytest.skip(f"{label}: this frontend's Vue nodes render no DOM widget at all (experimental before Nodes 2.0)")
    assert box is not None, f"{label}: no node text on the page"
    assert box["text"] == "\n".join(box["lines"]) and any("luminance" in line for line in box["lines"])
    assert box["visible"], f"{label}: {box}"
    assert box["scrollWidth"] <= box["clientWidth"] + 1, f"{label}: lines cut ({box['scrollWidth']} > {box['clientWidth']})"
    assert errors == [], label
    assert pack_warnings(page) == [], label
