import os
from contextlib import contextmanager

import pytest
from hypothesis import given, settings, strategies as st

from latent_lab.adapters import folders
from latent_lab.core.errors import LatentLabInputError


@contextmanager
def models_env(root):
    """Hypothesis runs many examples per test, so pytest's monkeypatch (per test) does not fit."""
    saved = os.environ.get("LATENT_LAB_MODELS_DIR")
    os.environ["LATENT_LAB_MODELS_DIR"] = root
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LATENT_LAB_MODELS_DIR")
        else:
            os.environ["LATENT_LAB_MODELS_DIR"] = saved


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_LAB_MODELS_DIR", str(tmp_path))
    return tmp_path


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=0, max_size=40))
def test_output_names_never_leave_the_folder(name):
    root = os.path.realpath("/tmp/latentlab-names")
    try:
        with models_env(root):
            path = folders.output_path("latent_rgb", name)
    except LatentLabInputError:
        return
    assert os.path.dirname(os.path.realpath(path)) == os.path.join(root, "latent_rgb")
    assert path.endswith(".safetensors")


TOKENS = ["a.safetensors", "b.safetensors", "..", ".", "/", "\\", "latent_rgb", "%2e", "~"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6))
def test_resolve_finds_only_files_inside_the_folder(parts):
    root = os.path.realpath("/tmp/latentlab-resolve")
    inside = os.path.join(root, "latent_rgb")
    os.makedirs(inside, exist_ok=True)
    for path in (os.path.join(inside, "a.safetensors"), os.path.join(root, "b.safetensors")):
        open(path, "wb").close()  # b sits one level up: reachable only by escaping
    name = "/".join(parts) if len(parts) > 1 else parts[0]
    try:
        with models_env(root):
            path = folders.resolve("latent_rgb", name, "make it")
    except LatentLabInputError:
        return
    assert os.path.commonpath([os.path.realpath(path), inside]) == inside


def test_resolve_finds_a_plain_name():
    root = os.path.realpath("/tmp/latentlab-resolve")
    os.makedirs(os.path.join(root, "latent_rgb"), exist_ok=True)
    open(os.path.join(root, "latent_rgb", "a.safetensors"), "wb").close()
    with models_env(root):
        assert folders.resolve("latent_rgb", "a.safetensors", "x") == os.path.join(root, "latent_rgb", "a.safetensors")


def test_symlink_leading_out_is_refused(models_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.safetensors"
    outside.write_bytes(b"x")
    (models_dir / "latent_rgb").mkdir()
    os.symlink(outside, models_dir / "latent_rgb" / "link.safetensors")
    with pytest.raises(LatentLabInputError, match="not in models/latent_rgb") as caught:
        folders.resolve("latent_rgb", "link.safetensors", "make it")
    assert "is a link" in caught.value.problem and "leads outside" in caught.value.problem
    assert "Copy the file into models/latent_rgb/" in caught.value.fix


def test_a_dangling_link_or_a_folder_is_not_called_missing(models_dir, tmp_path_factory):
    (models_dir / "latent_rgb" / "folder.safetensors").mkdir(parents=True)
    os.symlink(tmp_path_factory.mktemp("gone") / "x.safetensors", models_dir / "latent_rgb" / "dangling.safetensors")
    with pytest.raises(LatentLabInputError, match="link to a file that does not exist"):
        folders.resolve("latent_rgb", "dangling.safetensors", "make it")
    with pytest.raises(LatentLabInputError, match="not a regular file"):
        folders.resolve("latent_rgb", "folder.safetensors", "make it")


def test_a_link_inside_the_folder_is_followed(models_dir):
    (models_dir / "latent_rgb").mkdir()
    (models_dir / "latent_rgb" / "real.safetensors").write_bytes(b"x")
    os.symlink(models_dir / "latent_rgb" / "real.safetensors", models_dir / "latent_rgb" / "alias.safetensors")
    assert folders.resolve("latent_rgb", "alias.safetensors", "x").endswith("alias.safetensors")


RESERVED = ["con", "CON", "nul.safetensors", "aux.bridge", "Com1", "lpt9.x.y", "prn ", "com\u00b9"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_windows_device_names_are_refused_everywhere(models_dir, name):
    with pytest.raises(LatentLabInputError, match="reserved device name"):
        folders.output_path("latent_rgb", name)
    with pytest.raises(LatentLabInputError, match="reserved device name"):
        folders.resolve("latent_rgb", name.strip() + ".safetensors", "make it")


@pytest.mark.parametrize("name", ["console", "con_sd15_to_sdxl_affine", "my con", "com10", "lpt0", "nulls"])
def test_names_that_only_start_like_device_names_are_fine(models_dir, name):
    assert folders.output_path("latent_rgb", name).endswith(name + ".safetensors")


def test_long_names_are_refused_before_anything_is_written(models_dir):
    longest = "a" * (255 - len(".safetensors"))
    assert folders.output_path("latent_rgb", longest).endswith(longest + ".safetensors")
    for name in ("a" * 300, longest + "b", "\u00e9" * 122):  # é is 2 bytes in UTF-8
        with pytest.raises(LatentLabInputError, match="bytes long; file names may have at most 255"):
            folders.output_path("latent_rgb", name)
    with pytest.raises(LatentLabInputError, match="characters long"):
        folders.resolve("latent_rgb", "a/" * 5000 + "b.safetensors", "make it")
    with pytest.raises(LatentLabInputError, match="bytes long") as caught:
        folders.resolve("latent_rgb", "a" * 300 + ".safetensors", "make it")
    assert len(str(caught.value)) < 400
    assert not (models_dir / "latent_rgb").exists() or os.listdir(models_dir / "latent_rgb") == []


def test_listing_and_missing_file_message(models_dir):
    (models_dir / "latent_rgb" / "sub").mkdir(parents=True)
    (models_dir / "latent_rgb" / "sub" / "b.safetensors").write_bytes(b"")
    (models_dir / "latent_rgb" / "a.safetensors").write_bytes(b"")
    (models_dir / "latent_rgb" / "notes.txt").write_bytes(b"")
    assert folders.list_files("latent_rgb") == ["a.safetensors", "sub/b.safetensors"]
    with pytest.raises(LatentLabInputError, match="Make it with X.*copy the file"):
        folders.resolve("latent_rgb", "gone.safetensors", "Make it with X.")


def test_no_folder_outside_comfyui_without_env(monkeypatch):
    monkeypatch.delenv("LATENT_LAB_MODELS_DIR", raising=False)
    assert folders.list_files("latent_rgb") == []
    with pytest.raises(LatentLabInputError, match="LATENT_LAB_MODELS_DIR"):
        folders.output_path("latent_rgb", "x")
