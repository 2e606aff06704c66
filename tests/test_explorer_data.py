"""What the Latent Explorer and the extension share with Python stays equal to it.

- web/latent_lab_data.json is what tools/make_web_data.py writes from the Python core now;
- the fixtures in tests/fixtures/explorer/ still hold what the Python nodes compute (same generator);
- the JS tests (Node's test runner) pass: grammar vectors, and the Explorer's math on those fixtures.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import explorer_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "explorer")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import make_explorer_fixtures  # noqa: E402
import make_web_data  # noqa: E402


def test_web_data_is_current():
    with open(make_web_data.OUT) as handle:
        committed = handle.read()
    assert committed == make_web_data.text(), "web/latent_lab_data.json is stale: run python3 tools/make_web_data.py"


def test_web_data_covers_every_format_and_exported_node():
    from latent_lab.core.formats import FORMATS
    from latent_lab.nodes import NODE_CLASS_MAPPINGS
    data = json.loads(make_web_data.text())
    assert set(data["formats"]) == set(FORMATS)
    for key in make_web_data.EXPORTED_NODES:
        assert key in NODE_CLASS_MAPPINGS and key in data["nodes"]


def load_cases():
    with open(os.path.join(FIXTURES, "cases.json")) as handle:
        return json.load(handle)["cases"]


def test_fixture_latents_are_what_the_generator_writes():
    import torch
    for name, (shape, fmt, seed, options) in make_explorer_fixtures.LATENTS.items():
        raw = ref.synthetic_latent(shape, fmt, seed)
        fresh = ref.read_latent(ref.latent_bytes(raw, legacy=options.get("legacy", False),
                                                 dtype=getattr(torch, options.get("dtype", "float32"))))
        with open(os.path.join(FIXTURES, f"{name}.latent"), "rb") as handle:
            committed = ref.read_latent(handle.read())
        assert torch.equal(fresh, committed), name


@pytest.mark.parametrize("case", load_cases(), ids=lambda c: c["name"])
def test_fixture_expectations_still_match_the_python_nodes(case):
    with open(os.path.join(FIXTURES, case["latent"]), "rb") as handle:
        samples = ref.read_latent(handle.read())
    fresh = ref.expected(samples, case["settings"])
    shape = (*case["shape"][2:], 3)
    committed = case["expected"]
    assert np.abs(ref.unb64(committed["preview"], shape).astype(int) - fresh["preview"]).max() <= 1
    for channel, encoded in enumerate(committed["maps"]):
        assert np.abs(ref.unb64(encoded, shape).astype(int) - fresh["maps"][channel]).max() <= 1
    assert np.allclose(committed["bounds"], fresh["bounds"], rtol=1e-5)
    assert np.allclose(committed["mean_color"], fresh["mean_color"], atol=1e-5)
    assert [list(n) for n in ref.node_chain(case["settings"], case["shape"][1])] == case["nodes"]


def test_fixture_cases_exercise_every_correction_and_format():
    cases = load_cases()
    for op in ("center", "clamp", "maximize", "balance"):
        assert any(c["settings"][op]["enabled"] for c in cases), op
    assert {c["settings"]["format"] for c in cases} == {"sd15", "sdxl", "sd3", "flux"}
    assert any(c["settings"]["item"] > 0 for c in cases)
    assert any(c["settings"]["clamp"]["mode"] == "channel" for c in cases if c["settings"]["clamp"]["enabled"])


def test_corrections_in_fixtures_change_the_picture():
    cases = {c["name"]: c for c in load_cases()}
    plain, corrected = cases["sdxl_plain"]["expected"]["preview"], cases["sdxl_blog_all_ops"]["expected"]["preview"]
    shape = (*cases["sdxl_plain"]["shape"][2:], 3)
    assert np.abs(ref.unb64(plain, shape).astype(int) - ref.unb64(corrected, shape)).mean() > 5


def test_javascript_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs; .ci/run does this).")
    result = subprocess.run([node, "--test", os.path.join("tests", "js")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    summary = "\n".join(line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok")))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in summary and "# pass" in summary, summary
