"""Driving ComfyUI's own frontend in the browser tests: settings, page load, and warnings traced to our code."""
import json
import urllib.request

NODES_2_SETTING = "Comfy.VueNodes.Enabled"
PACK_SCRIPT_PATH = "/extensions/ComfyUI-LatentLab/"

# Every console.warn is kept with the stack that made it, so a warning can be traced to the pack's scripts even
# when the frontend's own code prints it (a deprecated API our code called).
RECORD_WARNINGS = """
window.__latentLabWarnings = [];
const warn = console.warn.bind(console);
console.warn = (...args) => {
    window.__latentLabWarnings.push({ text: args.map(String).join(' '), stack: new Error().stack ?? '' });
    warn(...args);
};
"""


def set_setting(server, name: str, value) -> None:
    request = urllib.request.Request(f"{server.url}/api/settings/{name}", data=json.dumps(value).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def open_comfyui(page, server, nodes_2: bool) -> list:
    """Load ComfyUI's page with Nodes 2.0 on or off and wait until the app and every extension are up.

    Returns a list that collects, from then on, the page errors whose stack passes through the pack's scripts
    (errors the frontend raises in its own code are not ours to fix)."""
    set_setting(server, NODES_2_SETTING, nodes_2)
    set_setting(server, "Comfy.TutorialCompleted", True)  # no template dialog over the canvas
    pack_errors = []
    page.on("pageerror", lambda error: PACK_SCRIPT_PATH in (error.stack or "") and pack_errors.append(error.stack))
    page.add_init_script(RECORD_WARNINGS)
    page.goto(server.url + "/")
    page.wait_for_function("window.app?.graph && window.app.extensions?.length > 0 && window.LiteGraph", timeout=120000)
    page.wait_for_timeout(1500)
    mode = page.evaluate(f"window.app.extensionManager?.setting?.get('{NODES_2_SETTING}') ?? null")
    assert mode is None or bool(mode) == nodes_2, f"{NODES_2_SETTING} is {mode}, wanted {nodes_2}"
    return pack_errors


def frontend_version(page) -> str:
    return str(page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ ?? 'unknown'"))


def pack_warnings(page) -> list:
    """console.warn calls whose stack passes through the pack's scripts, since the page loaded or last call."""
    found = page.evaluate("""(path) => { const all = window.__latentLabWarnings ?? []; window.__latentLabWarnings = [];
        return all.filter((w) => w.stack.includes(path)).map((w) => w.text); }""", PACK_SCRIPT_PATH)
    return found
