"""Integration harness: the pack inside a real ComfyUI.

Needs COMFYUI_PATH (a ComfyUI checkout) and must run under ComfyUI's Python environment:
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-python -m pytest tests/integration
Everything is skipped, with that reason, when COMFYUI_PATH is unset.

A session starts one server with --cpu on 127.0.0.1 and a throw-away base directory whose
custom_nodes/ holds a link to this repository, so ComfyUI's own custom-node loader imports the pack.
Random-weight models are built once with ComfyUI's classes and cached (LATENT_LAB_IT_CACHE,
default ~/.cache/latent-lab-it).
"""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # `import random_models`: the model builders shared with benchmarks/
import random_models  # noqa: E402
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
SKIP_REASON = ("COMFYUI_PATH is not set: integration tests need a ComfyUI checkout and its Python "
               "environment (see CONTRIBUTING.md, 'Integration tests').")
PACK_DIR_NAME = "ComfyUI-LatentLab"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.dirname(str(item.fspath)).startswith(HERE):
            item.add_marker(pytest.mark.integration)
            if not COMFYUI_PATH:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


class PromptError(RuntimeError):
    """A prompt ComfyUI refused or failed to execute; the message is ComfyUI's."""


class ComfyServer:
    PromptError = PromptError
    pack_dir_name = PACK_DIR_NAME

    def __init__(self, base_dir: str, port: int, process: subprocess.Popen, log_path: str):
        self.base_dir = base_dir
        self.models_dir = os.path.join(base_dir, "models")
        self.output_dir = os.path.join(base_dir, "output")
        self.input_dir = os.path.join(base_dir, "input")
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.log_path = log_path
        self.client_id = uuid.uuid4().hex

    def request(self, path: str, data=None, timeout: float = 60):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
        return json.loads(raw) if "json" in kind else raw

    def get_json(self, path: str, timeout: float = 60):
        return self.request(path, timeout=timeout)

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def queue(self, prompt: dict) -> str:
        try:
            answer = self.request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as error:
            raise PromptError(f"ComfyUI refused the prompt: {error.read().decode(errors='replace')}") from None
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and \
                    entry["status"].get("status_str") in ("success", "error"):
                if entry["status"]["status_str"] == "error":
                    raise PromptError(self._error_text(entry))
                return entry
            if self.process.poll() is not None:
                raise PromptError(f"ComfyUI exited with code {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()[-3000:]}")

    @staticmethod
    def _error_text(entry: dict) -> str:
        for kind, data in entry["status"].get("messages", []):
            if kind == "execution_error":
                return f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}"
        return json.dumps(entry["status"])

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        return self.wait(self.queue(prompt), timeout)["outputs"]

    def interrupt(self) -> None:
        self.request("/interrupt", {})

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return self.request(f"/view?{query}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(server: ComfyServer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited during start-up:\n{server.log()[-4000:]}")
        try:
            server.get_json("/system_stats", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{server.log()[-4000:]}")


def cached_random_model(kind: str, seed: int) -> str:
    return random_models.cached_random_model(kind, seed, COMFYUI_PATH)


def link_model(server: ComfyServer, folder: str, source: str, name: str) -> str:
    target_dir = os.path.join(server.models_dir, folder)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, name)
    if not os.path.exists(target):
        os.symlink(source, target)
    return name


@pytest.fixture(scope="session")
def comfy_path() -> str:
    if not COMFYUI_PATH:
        pytest.skip(SKIP_REASON)
    if not os.path.isfile(os.path.join(COMFYUI_PATH, "main.py")):
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} has no main.py: point it at a ComfyUI checkout.")
    return COMFYUI_PATH


@pytest.fixture(scope="session")
def comfy_commit(comfy_path) -> str:
    try:
        return subprocess.run(["git", "-C", comfy_path, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return os.environ.get("COMFYUI_COMMIT", "unknown")


FRONTEND_ROOT_VARIABLE = "LATENT_LAB_FRONTEND_ROOT"


@contextlib.contextmanager
def launch_comfyui(comfy_path: str, base: str, extra_args=()):
    """ComfyUI's own server with --cpu on 127.0.0.1, in base dir `base`, with the pack linked into custom_nodes."""
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    os.symlink(ROOT, os.path.join(base, "custom_nodes", PACK_DIR_NAME))
    port = free_port()
    log_path = os.path.join(base, "server.log")
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", base, "--disable-auto-launch", "--preview-method", "none",
               "--database-url", "sqlite:///:memory:", *extra_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LATENT_LAB_MODELS_DIR", None)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=comfy_path, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    server = ComfyServer(base, port, process, log_path)
    try:
        wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def newest_frontend_root() -> str | None:
    """The static folder of a newer comfyui-frontend-package, from LATENT_LAB_FRONTEND_ROOT (None when unset)."""
    root = os.environ.get(FRONTEND_ROOT_VARIABLE)
    if root and not os.path.isfile(os.path.join(root, "index.html")):
        pytest.fail(f"{FRONTEND_ROOT_VARIABLE}={root} has no index.html: point it at the comfyui_frontend_package/static "
                    "folder of an unpacked comfyui-frontend-package wheel.")
    return root


@pytest.fixture(scope="session")
def comfy_server(comfy_path, tmp_path_factory):
    with launch_comfyui(comfy_path, str(tmp_path_factory.mktemp("comfy_base"))) as server:
        yield server


@pytest.fixture(scope="session")
def random_sd_vae(comfy_server) -> str:
    """File name (in models/vae) of a random-weight SD1.x-architecture VAE: use with VAELoader."""
    return link_model(comfy_server, "vae", cached_random_model("vae", 1), "latentlab_random_sd_vae.safetensors")


@pytest.fixture(scope="session")
def random_sd_vae_b(comfy_server) -> str:
    """A second random SD VAE (another seed), for tests that need two different VAEs."""
    return link_model(comfy_server, "vae", cached_random_model("vae", 2), "latentlab_random_sd_vae_b.safetensors")


@pytest.fixture(scope="session")
def random_sd15_checkpoint(comfy_server) -> str:
    """File name (in models/checkpoints) of a random-weight SD1.5 checkpoint: use with CheckpointLoaderSimple."""
    return link_model(comfy_server, "checkpoints", cached_random_model("sd15_checkpoint", 3),
                      "latentlab_random_sd15.safetensors")


@pytest.fixture(scope="session")
def random_sdxl_checkpoint(comfy_server) -> str:
    """File name (in models/checkpoints) of a random-weight SDXL-family checkpoint (random_models.SDXL_KIND)."""
    return link_model(comfy_server, "checkpoints", cached_random_model(random_models.SDXL_KIND, 4),
                      f"latentlab_random_{random_models.SDXL_KIND}.safetensors")


@pytest.fixture(scope="session")
def comfy_inprocess(comfy_path):
    """ComfyUI imported into this test process with --cpu; returns the `comfy` package."""
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (device set-up happens at import)
    import comfy.sd  # noqa: F401
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    return comfy


@pytest.fixture(scope="session")
def inprocess_sd_vae(comfy_inprocess):
    """A comfy.sd.VAE built in this process from the cached random SD VAE weights."""
    import comfy.sd
    import comfy.utils
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(cached_random_model("vae", 1)))


@pytest.fixture(scope="session")
def inprocess_sd15(comfy_inprocess):
    """(model_patcher, clip, vae) loaded in this process from the cached random SD1.5 checkpoint."""
    import comfy.sd
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        cached_random_model("sd15_checkpoint", 3), output_vae=True, output_clip=True)
    return model, clip, vae


NEWEST_FRONTEND_SKIP = (f"{FRONTEND_ROOT_VARIABLE} is not set: the newest-frontend browser tests need the static folder of "
                        "an unpacked comfyui-frontend-package wheel (see CONTRIBUTING.md, 'Integration tests').")


@pytest.fixture(scope="session")
def newest_frontend_server(comfy_path, tmp_path_factory):
    """A second ComfyUI server that serves the frontend in LATENT_LAB_FRONTEND_ROOT (--front-end-root)."""
    root = newest_frontend_root()
    if not root:
        pytest.skip(NEWEST_FRONTEND_SKIP)
    with launch_comfyui(comfy_path, str(tmp_path_factory.mktemp("comfy_newest_frontend")),
                        ["--front-end-root", root]) as server:
        yield server


@pytest.fixture(scope="session", params=["bundled", "newest"])
def ui_server(request):
    """The server whose frontend a browser test drives: ComfyUI's bundled one, then the newest package."""
    server = request.getfixturevalue("comfy_server" if request.param == "bundled" else "newest_frontend_server")
    server.frontend = request.param
    return server
