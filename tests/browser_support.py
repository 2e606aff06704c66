"""Headless Chromium for browser tests: Debian's chromium driven by Playwright for Python, never a browser
that Playwright downloads itself. Tests skip (with the reason) where either is missing; .ci/run installs both.
"""
import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    override = os.environ.get("LATENT_LAB_CHROMIUM")
    for path in ((override,) if override else CHROMIUM_CANDIDATES):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; .ci/run does this)."
    if chromium_path() is None:
        return "Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium; .ci/run does this)."
    return None


@contextlib.contextmanager
def browser_page(viewport=(1400, 1000)):
    """(page, console messages, page errors) in a fresh headless Chromium with a throw-away profile.

    Console entries are (type, text); failed HTTP responses are added as ("http-error", "status url").
    """
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix="latentlab-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]})
            try:
                page = context.pages[0] if context.pages else context.new_page()
                console, errors = [], []
                page.on("console", lambda message: console.append((message.type, message.text)))
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("response", lambda response: response.status >= 400 and console.append(
                    ("http-error", f"{response.status} {response.url}")))
                yield page, console, errors
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class _Handler(http.server.SimpleHTTPRequestHandler):
    mounts: dict = {}
    api_roots: dict | None = None  # {"input": folder}: answer /latentlab/api/ with core/latent_files.py

    def do_GET(self):
        if self.api_roots is not None and self.path.startswith("/latentlab/api/"):
            return self._api()
        return super().do_GET()

    def _api(self):
        import json
        import urllib.parse
        from latent_lab.core import latent_files
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        try:
            if url.path == "/latentlab/api/latents":
                body = json.dumps({"files": latent_files.list_files(self.api_roots),
                                   "max_bytes": latent_files.MAX_BYTES}).encode()
                return self._answer(200, "application/json", body)
            if url.path == "/latentlab/api/latent":
                path = latent_files.resolve(self.api_roots, query.get("type", "output"), query.get("filename", ""),
                                            query.get("subfolder", ""))
                with open(path, "rb") as handle:
                    return self._answer(200, "application/octet-stream", handle.read())
            raise latent_files.LatentFileError(404, f"Unknown API path {url.path}.")
        except latent_files.LatentFileError as error:
            return self._answer(error.status, "application/json", json.dumps(error.as_json()).encode())

    def _answer(self, status: int, kind: str, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def translate_path(self, path):
        clean = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, folder in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if clean.startswith(prefix):
                rest = clean[len(prefix):].lstrip("/") or "index.html"
                target = os.path.realpath(os.path.join(folder, rest))
                if target.startswith(os.path.realpath(folder) + os.sep):
                    return target
        return os.path.join(ROOT, "__nothing_here__")

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(mounts: dict, api_roots: dict | None = None):
    """Serve folders on 127.0.0.1 at URL prefixes ({"/latentlab/": "web"}); yields the base URL.

    api_roots: also answer the Explorer's /latentlab/api/ from these folders, as the real routes do.
    """
    handler = type("Handler", (_Handler,), {"mounts": mounts, "api_roots": api_roots})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def needs_browser():
    reason = skip_reason()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def artifact_path(name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)
