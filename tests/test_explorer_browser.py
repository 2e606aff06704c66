"""The Latent Explorer in a real headless Chromium, served by a small static server on 127.0.0.1.

Its listing API is answered by core/latent_files.py, as ComfyUI's routes do. Canvas pixels are compared with
what Latent Lab's Python nodes and core compute for the same settings (1/255 per channel). A screenshot is kept
in tests/artifacts/. Skipped, with the reason, where Playwright or Debian's chromium is missing.
"""
import base64
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import explorer_reference as ref
from browser_support import ROOT, artifact_path, browser_page, needs_browser, static_server
from workflow_builder import all_specs, problems

pytestmark = needs_browser()
WEB = os.path.join(ROOT, "web")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "explorer")


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("comfy_input")
    os.makedirs(folder / "fixtures")
    for name in os.listdir(FIXTURES):
        if name.endswith(".latent"):
            shutil.copy(os.path.join(FIXTURES, name), folder / "fixtures" / name)
    (folder / "notes.txt").write_text("not a latent")
    with static_server({"/latentlab/": WEB, "/fixtures/": os.path.dirname(FIXTURES)}, api_roots={"input": str(folder)}) as base:
        with browser_page() as (page, console, errors):
            yield SimpleNamespace(page=page, base=base, console=console, errors=errors)


def open_explorer(explorer, query: str = ""):
    explorer.page.goto(f"{explorer.base}/latentlab/{query}")
    explorer.page.wait_for_selector("body[data-ready=true]", timeout=20000)


def samples_of(name: str):
    with open(os.path.join(FIXTURES, name), "rb") as handle:
        return ref.read_latent(handle.read())


def canvas_rgb(page, selector: str) -> np.ndarray:
    width, height, data = page.evaluate("""(selector) => {
        const canvas = document.querySelector(selector);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let text = '';
        for (let i = 0; i < pixels.length; i++) text += String.fromCharCode(pixels[i]);
        return [canvas.width, canvas.height, btoa(text)];
    }""", selector)
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)[..., :3]


def page_settings(page) -> dict:
    return page.evaluate("structuredClone(window.latentExplorer.settings)")


def set_slider(page, selector: str, value: float) -> None:
    page.evaluate("""([selector, value]) => {
        const input = document.querySelector(selector);
        input.value = String(value);
        input.dispatchEvent(new Event('input', {bubbles: true}));
    }""", [selector, value])


def assert_matches_python(page, latent_name: str) -> dict:
    settings = page_settings(page)
    want = ref.expected(samples_of(latent_name), settings)
    got = canvas_rgb(page, "#preview").astype(int)
    assert got.shape == want["preview"].shape
    assert np.abs(got - want["preview"]).max() <= 1
    for channel, expected_map in enumerate(want["maps"]):
        tile = canvas_rgb(page, f'#maps canvas[data-channel="{channel}"]').astype(int)
        assert np.abs(tile - expected_map).max() <= 1, f"channel map {channel}"
    return settings


def test_lists_the_folder_and_opens_a_file_by_click(explorer):
    open_explorer(explorer)
    page = explorer.page
    items = page.locator("#file-list li")
    assert items.count() == 5  # the .latent files only, not notes.txt
    page.locator("#file-list li", has_text="sdxl_24x32.latent").click()
    page.wait_for_function("document.querySelector('#file-info').textContent.includes('1×4×24×32')")
    assert "current" in page.locator("#file-list li", has_text="sdxl_24x32.latent").get_attribute("class")
    settings = assert_matches_python(page, "sdxl_24x32.latent")
    assert settings["format"] == "sdxl" and not any(settings[op]["enabled"] for op in ("center", "clamp", "maximize", "balance"))
    assert "filename=sdxl_24x32.latent" in page.url


def test_sliders_change_the_pixels_as_the_python_nodes_do(explorer):
    open_explorer(explorer, "?src=/fixtures/explorer/sdxl_24x32.latent")
    page = explorer.page
    before = canvas_rgb(page, "#preview")
    for switch in ("#center-on", "#clamp-on", "#max-on", "#bal-on"):
        page.click(switch)
    set_slider(page, "#center-channel", 0.7)
    set_slider(page, "#center-global", 0.35)
    set_slider(page, "#clamp-threshold", 2.5)
    page.focus("#clamp-boundary")
    for _ in range(4):
        page.keyboard.press("ArrowLeft")  # 4.0 -> 3.8 in steps of 0.05, as a person would
    set_slider(page, "#max-strength", 0.6)
    page.select_option("#factors", "blog")
    page.select_option("#map-scale", "per_channel")
    page.locator("#max-channels label", has_text="pattern").click()
    page.select_option("#bal-target-mode", "color")
    page.evaluate("""() => { const c = document.querySelector('#bal-target'); c.value = '#a07050';
                      c.dispatchEvent(new Event('input', {bubbles: true})); }""")
    settings = assert_matches_python(page, "sdxl_24x32.latent")
    assert settings["clamp"]["boundary"] == pytest.approx(3.8)
    assert settings["center"]["channelStrength"] == 0.7 and settings["clamp"]["threshold"] == 2.5
    assert settings["maximize"]["channels"] == [0, 1, 2, 3] and settings["balance"]["target"] == "#a07050"
    assert page.locator("#clamp-boundary + output, label:has(#clamp-boundary) output").first.inner_text() == "3.80"
    assert np.abs(canvas_rgb(page, "#preview").astype(int) - before).max() > 10
    page.screenshot(path=artifact_path("explorer_corrected.png"), full_page=True)


def test_a_threshold_above_the_boundary_is_reported_and_left_out(explorer):
    open_explorer(explorer, "?src=/fixtures/explorer/sdxl_24x32.latent")
    page = explorer.page
    page.click("#clamp-on")
    set_slider(page, "#clamp-threshold", 5)
    set_slider(page, "#clamp-boundary", 4)
    error = page.locator('fieldset[data-op="clamp"] .op-error')
    assert error.is_visible() and "threshold" in error.inner_text()
    settings = page_settings(page)
    settings["clamp"]["enabled"] = False
    want = ref.expected(samples_of("sdxl_24x32.latent"), settings)
    assert np.abs(canvas_rgb(page, "#preview").astype(int) - want["preview"]).max() <= 1
    exported = [node["type"] for node in json.loads(page.input_value("#export"))["nodes"]]
    assert "LatentLabSoftClamp" not in exported  # left out of the nodes as of the preview


def test_controls_do_nothing_before_a_file_is_open(explorer):
    explorer.errors.clear()
    open_explorer(explorer, "")
    page = explorer.page
    for selector in ("#map-scale", "#clamp-mode", "#bal-target-mode"):
        page.evaluate("s => document.querySelector(s).dispatchEvent(new Event('change', {bubbles: true}))", selector)
    page.evaluate("document.querySelector('#bal-target').dispatchEvent(new Event('input', {bubbles: true}))")
    assert explorer.errors == []


def message_contains(page, text: str, timeout_ms: int = 10_000) -> bool:
    """The page writes #message after an asynchronous read or fetch: wait for it rather than race it."""
    page.wait_for_function("t => document.querySelector('#message').innerText.includes(t)", arg=text,
                           timeout=timeout_ms)
    return True


def drop(page, name: str, data: bytes) -> None:
    page.evaluate("""([name, b64]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name));
        document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", [name, base64.b64encode(data).decode()])


def test_drag_and_drop_a_half_precision_batch_and_pick_an_item(explorer):
    open_explorer(explorer)
    page = explorer.page
    with open(os.path.join(FIXTURES, "sd15_batch2_f16.latent"), "rb") as handle:
        drop(page, "sd15_batch2_f16.latent", handle.read())
    page.wait_for_function("document.querySelector('#file-info').textContent.includes('2×4×16×20')")
    page.select_option("#format", "sd15")
    page.select_option("#item", "1")
    page.click("#clamp-on")
    settings = assert_matches_python(page, "sd15_batch2_f16.latent")
    assert settings["item"] == 1 and settings["format"] == "sd15"


def test_bad_files_and_paths_are_refused_with_a_reason(explorer):
    open_explorer(explorer)
    page = explorer.page
    drop(page, "notes.txt", b"hello")
    assert message_contains(page, "not a .latent file")
    drop(page, "broken.latent", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    assert message_contains(page, "safetensors")
    open_explorer(explorer, "?type=input&subfolder=..&filename=notes.latent")
    page.wait_for_function("!document.querySelector('#message').hidden && !document.querySelector('#message').textContent.startsWith('Loading')")
    assert message_contains(page, "leaves its folder")


def clipboard_as_workflow(clipboard: dict) -> dict:
    """The pasted nodes as a UI workflow, fed by an Empty Latent Image, for the workflow validator."""
    nodes = json.loads(json.dumps(clipboard["nodes"]))
    links = [[l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"]]
             for l in clipboard["links"]]
    source_id, link_id = max(n["id"] for n in nodes) + 1, len(links) + 1
    nodes.append({"id": source_id, "type": "EmptyLatentImage", "pos": [0, 0], "size": [300, 100], "flags": {},
                  "order": 0, "mode": 0, "inputs": [],
                  "outputs": [{"name": "LATENT", "type": "LATENT", "links": [link_id], "slot_index": 0}],
                  "properties": {}, "widgets_values": [512, 512, 1]})
    links.append([link_id, source_id, 0, nodes[0]["id"], 0, "LATENT"])
    nodes[0]["inputs"][0]["link"] = link_id
    return {"nodes": nodes, "links": links, "version": 0.4}


def test_copy_nodes_gives_ready_latent_lab_nodes(explorer):
    open_explorer(explorer, "?src=/fixtures/explorer/flux_16x16.latent")
    page = explorer.page
    for switch in ("#center-on", "#max-on", "#bal-on"):
        page.click(switch)
    set_slider(page, "#bal-strength", 0.45)
    page.click("#copy")
    text = page.evaluate("localStorage.getItem('litegrapheditor_clipboard')")
    clipboard = json.loads(text)
    assert clipboard == json.loads(page.input_value("#export"))
    assert [n["type"] for n in clipboard["nodes"]] == ["LatentLabCenter", "LatentLabMaximize", "LatentLabColorBalance",
                                                       "LatentLabRGBPreview"]
    assert problems(clipboard_as_workflow(clipboard), all_specs()) == []
    settings = page_settings(page)
    specs = all_specs()
    for node, (key, values) in zip(clipboard["nodes"], ref.node_chain(settings, 16)):
        names = [name for name, spec in specs[key]["input"]["required"].items() if isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]
        assert node["type"] == key
        assert {n: v for n, v in zip(names, node["widgets_values"]) if n in values} == values
    assert message_contains(page, "Ctrl+V")


def test_page_has_no_console_errors_and_keeps_a_screenshot(explorer):
    explorer.console.clear()
    explorer.errors.clear()
    open_explorer(explorer, "?type=input&subfolder=fixtures&filename=sdxl_24x32.latent")
    page = explorer.page
    page.wait_for_function("document.querySelector('#file-info').textContent.includes('sdxl_24x32')")
    page.click("#clamp-on")
    page.click("#center-on")
    page.screenshot(path=artifact_path("explorer.png"), full_page=True)
    assert explorer.errors == []
    assert [text for kind, text in explorer.console if kind == "error"] == []
