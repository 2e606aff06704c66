"""Which .latent files the Explorer may read: listing and path safety, without ComfyUI."""
import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

from latent_lab.core import latent_files
from latent_lab.core.latent_files import LatentFileError, list_files, resolve

import explorer_reference as ref


@pytest.fixture
def folders(tmp_path):
    output, inputs, outside = tmp_path / "output", tmp_path / "input", tmp_path / "outside"
    for folder in (output / "latents", inputs, outside):
        folder.mkdir(parents=True)
    (output / "latents" / "a_00001_.latent").write_bytes(ref.latent_bytes(torch.zeros(1, 4, 8, 8)))
    (inputs / "b.latent").write_bytes(ref.latent_bytes(torch.ones(2, 16, 4, 4), dtype=torch.float16))
    (inputs / "legacy.latent").write_bytes(ref.latent_bytes(torch.ones(1, 4, 2, 2), legacy=True))
    (inputs / "notes.txt").write_text("not a latent")
    (inputs / ".hidden.latent").write_bytes(b"x")
    (outside / "secret.latent").write_bytes(ref.latent_bytes(torch.zeros(1, 4, 2, 2)))
    (outside / "dir").mkdir()
    (outside / "dir" / "deep.latent").write_bytes(b"x")
    os.symlink(outside / "secret.latent", output / "latents" / "link_out.latent")
    os.symlink(outside / "dir", output / "linked_dir")
    os.symlink(inputs / "b.latent", output / "link_in_output_to_input.latent")
    roots = {"output": str(output), "input": str(inputs)}
    return roots, tmp_path


def test_lists_latents_inside_the_folders_with_their_shapes(folders):
    roots, _ = folders
    files = {(f["type"], f["subfolder"], f["filename"]): f for f in list_files(roots)}
    assert set(files) == {("output", "latents", "a_00001_.latent"), ("input", "", "b.latent"),
                          ("input", "", "legacy.latent")}
    assert files[("output", "latents", "a_00001_.latent")]["shape"] == [1, 4, 8, 8]
    assert files[("input", "", "b.latent")]["dtype"] == "F16"
    assert files[("input", "", "legacy.latent")]["legacy_scale"] is True
    assert not any(f["too_large"] for f in files.values())


def test_listing_is_newest_first_and_capped(folders):
    roots, _ = folders
    newest = os.path.join(roots["input"], "legacy.latent")
    os.utime(newest, (4e9, 4e9))
    files = list_files(roots)
    assert files[0]["filename"] == "legacy.latent"
    assert len(list_files(roots, limit=2)) == 2


def test_resolves_a_listed_file(folders):
    roots, _ = folders
    path = resolve(roots, "output", "a_00001_.latent", "latents")
    assert path == os.path.realpath(os.path.join(roots["output"], "latents", "a_00001_.latent"))
    assert resolve(roots, "input", "b.latent") == os.path.realpath(os.path.join(roots["input"], "b.latent"))


@pytest.mark.parametrize("root_type, filename, subfolder, status, words", [
    ("output", "link_out.latent", "latents", 403, "outside"),
    ("output", "deep.latent", "linked_dir", 403, "outside"),
    ("output", "link_in_output_to_input.latent", "", 403, "outside"),
    ("output", "secret.latent", "../outside", 403, "leaves"),
    ("output", "../outside/secret.latent", "", 403, "leaves"),
    ("output", "x.latent", "/etc", 403, "absolute"),
    ("output", "/etc/passwd.latent", "", 403, "absolute"),
    ("output", "x.latent", "C:\\Windows", 403, "absolute"),
    ("output", "x.latent", "latents\\..\\..", 403, "leaves"),
    ("input", ".hidden.latent", "", 403, "hidden"),
    ("input", "notes.txt", "", 403, "not a .latent"),
    ("input", "missing.latent", "", 404, "no .latent file"),
    ("input", "", "", 400, "No file name"),
    ("temp", "b.latent", "", 400, "Unknown folder type"),
    ("input", "sub/b.latent", "", 400, "contains a folder"),
    ("input", "b\x00.latent", "", 400, "not text"),
])
def test_refuses_with_a_status_and_a_reason(folders, root_type, filename, subfolder, status, words):
    roots, _ = folders
    with pytest.raises(LatentFileError) as caught:
        resolve(roots, root_type, filename, subfolder)
    error = caught.value
    assert error.status == status and words in error.problem and error.fix
    assert error.as_json() == {"error": error.problem, "fix": error.fix, "status": status}


def test_size_cap(folders):
    roots, _ = folders
    with pytest.raises(LatentFileError) as caught:
        resolve(roots, "input", "b.latent", max_bytes=100)
    assert caught.value.status == 413 and "MiB" in caught.value.problem
    entry = next(f for f in list_files(roots, max_bytes=100) if f["filename"] == "b.latent")
    assert entry["too_large"] is True


def test_unreadable_headers_are_listed_as_unreadable(folders):
    roots, _ = folders
    with open(os.path.join(roots["input"], "broken.latent"), "wb") as handle:
        handle.write(b"\xff" * 16)
    entry = next(f for f in list_files(roots) if f["filename"] == "broken.latent")
    assert entry["shape"] is None and entry["unreadable"]


def test_missing_roots_list_nothing(tmp_path):
    assert list_files({"output": str(tmp_path / "nope"), "input": ""}) == []


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab./\\:-_ \x00", max_size=24), st.text(alphabet="ab./\\:-_ ", max_size=16))
def test_any_request_resolves_inside_its_root_or_is_refused(tmp_path_factory, filename, subfolder):
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "output"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b.latent").write_bytes(b"x")
    (base / "b.latent").write_bytes(b"x")
    roots = {"output": str(root)}
    try:
        path = resolve(roots, "output", filename, subfolder)
    except LatentFileError as error:
        assert error.status in (400, 403, 404, 413)
        return
    assert path.startswith(os.path.realpath(root) + os.sep) and path.endswith(".latent")
    assert os.path.isfile(path)


def test_routes_module_does_nothing_outside_comfyui():
    from latent_lab.adapters import routes
    assert routes.register_routes() is False
    assert routes.roots() == {}
    assert os.path.isfile(os.path.join(routes.WEB_DIR, "index.html"))
    assert latent_files.MAX_BYTES >= 16 * 2**20


def test_a_deeply_nested_header_is_listed_as_unreadable(folders):
    roots, _ = folders
    header = b"[" * 100_000 + b"]" * 100_000
    with open(os.path.join(roots["input"], "nested.latent"), "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
    entry = next(f for f in list_files(roots) if f["filename"] == "nested.latent")
    assert entry["shape"] is None and entry["unreadable"] == "header nested too deeply"


@pytest.mark.parametrize("filename, subfolder", [("a" * 100_000 + ".latent", ""), ("/" + "b" * 100_000, ""),
                                                 ("x.latent", "c" * 100_000), ("d" * 50_000 + ".txt", "")])
def test_refusals_quote_a_long_name_as_a_short_excerpt(folders, filename, subfolder):
    roots, _ = folders
    with pytest.raises(LatentFileError) as caught:
        resolve(roots, "output", filename, subfolder)
    assert len(caught.value.problem) < 300
