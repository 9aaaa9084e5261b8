"""Tests for xception_core.io.assets: the assets folder and the bundled example photos."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from xception_core.io.assets import ExampleImage, assets_dir, example_images
from xception_core.inputs.images import load_image

REPO_ASSETS = Path(__file__).resolve().parents[2] / "assets"


def test_default_assets_dir_is_repo_assets():
    assert assets_dir() == REPO_ASSETS
    assert assets_dir().is_absolute()


def test_another_folder(tmp_path):
    assert assets_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="XCEPTION_ASSETS_DIR"):
        assets_dir(tmp_path / "missing")


def test_settings_read_the_assets_folder_from_the_environment(tmp_path):
    from xception_core.settings import Settings

    assert Settings.from_env({"XCEPTION_ASSETS_DIR": str(tmp_path)}).assets_dir == tmp_path
    assert Settings.from_env({"XCEPTION_ASSETS_DIR": "   "}).assets_dir is None  # blank means unset


# ---------------------------------------------------------------------------------------------
# Bundled examples
# ---------------------------------------------------------------------------------------------


def test_examples_exist_and_carry_source_and_license():
    examples = example_images()
    assert len(examples) >= 3
    for example in examples:
        assert isinstance(example, ExampleImage)
        assert example.path.is_file() and example.path.parent == REPO_ASSETS / "examples"
        assert example.title.strip() and example.source.strip() and example.license.strip()


def test_examples_load_as_rgb_photos():
    for example in example_images():
        image = load_image(example.path)
        assert image.mode == "RGB"
        assert max(image.size) <= 800 and min(image.size) >= 64


def test_examples_are_documented_and_small():
    sources = (REPO_ASSETS / "examples" / "SOURCES.md").read_text(encoding="utf-8")
    listed = {example.path.name for example in example_images()}
    for name in listed:
        assert f"`{name}`" in sources, f"{name} is missing from SOURCES.md"
    images_on_disk = {
        p.name for p in (REPO_ASSETS / "examples").iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}
    }
    assert images_on_disk == listed, "every bundled photo must be listed in examples.json"
    total = sum(p.stat().st_size for p in (REPO_ASSETS / "examples").iterdir())
    assert total < 1_500_000


def test_example_image_is_frozen():
    example = example_images()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.title = "changed"  # type: ignore[misc]


def test_example_images_returns_a_new_list():
    first = example_images()
    first.clear()
    assert example_images()


# ---------------------------------------------------------------------------------------------
# Broken example indexes
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def other_examples(tmp_path) -> Path:
    folder = tmp_path / "assets" / "examples"
    folder.mkdir(parents=True)
    shutil.copy(REPO_ASSETS / "examples" / "chelsea_cat.jpg", folder)
    return folder


def write_index(folder: Path, entries) -> None:
    (folder / "examples.json").write_text(json.dumps(entries), encoding="utf-8")


GOOD = {"file": "chelsea_cat.jpg", "title": "Cat", "source": "scikit-image", "license": "CC0 1.0"}


def test_override_folder_examples(other_examples):
    write_index(other_examples, [GOOD])
    (example,) = example_images(other_examples.parent)
    assert example == ExampleImage(other_examples / "chelsea_cat.jpg", "Cat", "scikit-image", "CC0 1.0")


@pytest.mark.parametrize(
    ("entries", "error", "message"),
    [
        ({"file": "x"}, ValueError, "JSON list"),
        (["chelsea_cat.jpg"], ValueError, "must be an object"),
        ([{**GOOD, "license": ""}], ValueError, "non-empty string 'license'"),
        ([{k: v for k, v in GOOD.items() if k != "source"}], ValueError, "'source'"),
        ([{**GOOD, "file": "../chelsea_cat.jpg"}], ValueError, "plain file name"),
        ([{**GOOD, "file": "/etc/passwd"}], ValueError, "plain file name"),
        ([{**GOOD, "file": "missing.jpg"}], FileNotFoundError, "missing.jpg"),
    ],
)
def test_malformed_index(other_examples, entries, error, message):
    write_index(other_examples, entries)
    with pytest.raises(error, match=message):
        example_images(other_examples.parent)


def test_missing_or_invalid_index(other_examples):
    with pytest.raises(FileNotFoundError, match="examples.json"):
        example_images(other_examples.parent)
    (other_examples / "examples.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        example_images(other_examples.parent)
