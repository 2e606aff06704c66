"""Every relative link and picture in the README, CONTRIBUTING.md and docs/ leads to a file that exists (and to a
heading that exists, when it names one), and the README stays a short user guide."""
import glob
import os
import re
from urllib.parse import unquote

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = sorted([os.path.join(ROOT, "README.md"), os.path.join(ROOT, "CONTRIBUTING.md")]
                   + glob.glob(os.path.join(ROOT, "docs", "*.md")))
README_MAX_LINES = 260

FENCED = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# A link target may hold balanced parentheses, as CommonMark allows: "Inspect%20a%20latent%20(SD1.5).jpg".
MARKDOWN_TARGET = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?((?:[^()\s<>]|\([^()\s]*\))+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_TARGET = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href|srcset)=\"([^\"]+)\"", re.I)
PICTURE = re.compile(r"\.(?:jpe?g|png|gif|webp)$", re.I)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def prose(text: str) -> str:
    """The text with code blocks and code spans removed: a link inside code is an example, not a link."""
    return INLINE_CODE.sub("", FENCED.sub("", text))


def targets(text: str) -> list[str]:
    body = prose(text)
    return MARKDOWN_TARGET.findall(body) + HTML_TARGET.findall(body)


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered -1, -2, …"""
    anchors, seen = set(), {}
    for line in FENCED.sub("", text).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(document: str, text: str) -> list[str]:
    problems = []
    for target in targets(text):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(document), unquote(path_part))) if path_part else document
        if path_part and not os.path.exists(path):
            problems.append(f"{target}: no such file {os.path.relpath(path, ROOT)}")
        elif anchor and path.endswith(".md"):
            linked = text if path == document else read(path)
            if unquote(anchor).lower() not in heading_anchors(linked):
                problems.append(f"{target}: {os.path.relpath(path, ROOT)} has no heading #{anchor}")
    return problems


def test_there_are_documents():
    assert os.path.join(ROOT, "README.md") in DOCUMENTS and os.path.join(ROOT, "CONTRIBUTING.md") in DOCUMENTS
    assert len(DOCUMENTS) > 2, "docs/ holds the detail the README leaves out"
    assert all(os.path.isfile(path) for path in DOCUMENTS)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_and_pictures_resolve(document):
    assert broken_links(document, read(document)) == []


def test_readme_pictures_every_capability_and_every_example_workflow():
    readme = read(os.path.join(ROOT, "README.md"))
    shown = {os.path.normpath(unquote(t)) for t in targets(readme) if PICTURE.search(t)}
    for path in glob.glob(os.path.join(ROOT, "example_workflows", "*.jpg")):
        assert os.path.relpath(path, ROOT) in shown, f"README shows no {os.path.relpath(path, ROOT)}"
    overview = readme.split("\n## What each capability shows", 1)[1].split("\n## ", 1)[0]
    for capability in ("See", "Correct", "Bridge", "Probe", "Sweep", "Latent Explorer"):
        section = overview.split(f"\n### {capability}", 1)[1].split("\n### ", 1)[0]
        assert any(PICTURE.search(t) for t in targets(section)), f"README: no picture for {capability}"


def test_readme_is_short():
    lines = read(os.path.join(ROOT, "README.md")).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail to docs/"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "a picture (1).jpg").write_bytes(b"")
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Two words\n", encoding="utf-8")
    document = str(tmp_path / "README.md")
    text = ("![ok](a%20picture%20(1).jpg) ![missing](a%20picture%20(2).jpg) [page](docs/page.md#two-words)\n"
            "[no heading](docs/page.md#three-words) <img src=\"gone.png\" width=\"10\"> [web](https://example.com/x)\n"
            "`[code](not/a/link.md)` [self](#here) [bad self](#nowhere)\n\n## Here\n\n```\n[block](not/a/link.md)\n```\n")
    found = broken_links(document, text)
    assert len(found) == 4, found
    assert any("a picture (2).jpg" in problem for problem in found)
    assert any("no heading #three-words" in problem for problem in found)
    assert any("gone.png" in problem for problem in found)
    assert any("no heading #nowhere" in problem for problem in found)


def test_heading_anchors_follow_github():
    text = "# Latent Lab\n## Latent RGB Preview (`bench_preview.py`)\n## Sweep: every CFG value\n## Sweep: every CFG value\n"
    assert heading_anchors(text) == {"latent-lab", "latent-rgb-preview-bench_previewpy",
                                     "sweep-every-cfg-value", "sweep-every-cfg-value-1"}


def architecture_files() -> dict[str, set[str]]:
    """CONTRIBUTING's "Where each capability lives": layer folder -> the file names it lists for that layer."""
    section = read(os.path.join(ROOT, "CONTRIBUTING.md")).split("\n### Where each capability lives", 1)[1]
    section = section.split("\n## ", 1)[0]
    listed = {layer: set() for layer in LAYERS}
    for layer, name in re.findall(r"`(core|adapters|nodes)/([\w.]+)`", section):
        listed[layer].add(name)
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    for row in rows[2:]:
        for layer in LAYERS:
            listed[layer].update(re.findall(r"`([\w.]+)`", row[header.index(layer)]))
    return listed


LAYERS = ("core", "adapters", "nodes")


@pytest.mark.parametrize("layer", LAYERS)
def test_architecture_table_names_every_module(layer):
    modules = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, layer, "*.py"))} - {"__init__.py"}
    listed = architecture_files()[layer]
    assert modules - listed == set(), f"CONTRIBUTING.md's capability table does not name these {layer}/ files"
    assert listed - modules - {"__init__.py"} == set(), f"CONTRIBUTING.md names {layer}/ files that do not exist"
